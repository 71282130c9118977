{
  "targets": [
    {
      "target_name": "ksr_native",
      "sources": ["src/addon.c", "src/fsmeta.c"],
      "cflags": ["-std=c11", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE"]
    }
  ]
}
