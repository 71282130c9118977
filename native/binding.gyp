{
  "targets": [
    {
      "target_name": "ksr_native",
      "sources": ["src/addon.c", "src/fsmeta.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]
    },
    {
      "target_name": "ksr-fanotify-helper",
      "type": "executable",
      "sources": ["src/fanotify-helper.c"],
      "cflags": ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror"]
    }
  ]
}
