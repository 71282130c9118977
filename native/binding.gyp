{
  "targets": [
    {
      "target_name": "ksr-fanotify-helper",
      "type": "executable",
      "sources": ["fanotify-helper.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-std=gnu11"],
      "conditions": [["OS!='linux'", {"type": "none", "sources": []}]]
    }
  ]
}
