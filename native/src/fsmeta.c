/* File metadata Node's fs lacks: extended attributes (never following symlinks), mknod for
 * FIFOs, sockets and device nodes, and modification times with exact nanoseconds (Node's
 * utimes takes seconds as a double, which keeps only about a quarter of a microsecond). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "addon.h"

#define MAX_ARGS 4

typedef struct {
  size_t count;
  napi_value values[MAX_ARGS];
} args_t;

static int get_args(napi_env env, napi_callback_info info, size_t wanted, args_t *args) {
  args->count = MAX_ARGS;
  napi_get_cb_info(env, info, &args->count, args->values, NULL, NULL);
  if (args->count < wanted) {
    napi_throw_type_error(env, NULL, "missing arguments");
    return 0;
  }
  return 1;
}

static int get_uint32(napi_env env, napi_value value, const char *what, uint32_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || number < 0 || number > 4294967295.0 ||
      number != (double)(uint32_t)number) {
    char message[128];
    snprintf(message, sizeof message, "%s must be an integer from 0 to 2^32-1", what);
    napi_throw_type_error(env, NULL, message);
    return 0;
  }
  *out = (uint32_t)number;
  return 1;
}

typedef ssize_t (*sized_query)(const char *path, const char *name, void *buffer, size_t size);

static ssize_t query_names(const char *path, const char *name, void *buffer, size_t size) {
  (void)name;
  return llistxattr(path, buffer, size);
}

static ssize_t query_value(const char *path, const char *name, void *buffer, size_t size) {
  return lgetxattr(path, name, buffer, size);
}

/* Asks for the size, then reads; retried when the value grew in between (ERANGE). On success
 * *out is malloc'ed (the caller frees it); -1 with errno set otherwise. */
static ssize_t read_sized(sized_query query, const char *path, const char *name, void **out) {
  *out = NULL;
  for (;;) {
    ssize_t size = query(path, name, NULL, 0);
    if (size < 0) return -1;
    void *buffer = malloc(size > 0 ? (size_t)size : 1);
    if (buffer == NULL) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t got = query(path, name, buffer, (size_t)size);
    if (got >= 0) {
      *out = buffer;
      return got;
    }
    int error = errno;
    free(buffer);
    errno = error;
    if (error != ERANGE) return -1;
  }
}

/* llistxattr(path) -> string[] */
static napi_value list_xattrs(napi_env env, napi_callback_info info) {
  args_t args;
  if (!get_args(env, info, 1, &args)) return NULL;
  char *path = ksr_string_arg(env, args.values[0], "path");
  if (path == NULL) return NULL;
  void *buffer;
  ssize_t size = read_sized(query_names, path, NULL, &buffer);
  if (size < 0) {
    ksr_throw_errno(env, errno, "llistxattr", path);
    free(path);
    return NULL;
  }
  const char *names = buffer;
  napi_value result;
  napi_create_array(env, &result);
  uint32_t index = 0;
  for (ssize_t at = 0; at < size;) {
    size_t length = strnlen(names + at, (size_t)(size - at));
    napi_value name;
    napi_create_string_utf8(env, names + at, length, &name);
    napi_set_element(env, result, index++, name);
    at += (ssize_t)length + 1;
  }
  free(buffer);
  free(path);
  return result;
}

/* The path and attribute name arguments, heap copies the caller frees; 0 after throwing. */
static int path_and_name(napi_env env, const args_t *args, char **path, char **name) {
  *path = ksr_string_arg(env, args->values[0], "path");
  if (*path == NULL) return 0;
  *name = ksr_string_arg(env, args->values[1], "name");
  if (*name != NULL) return 1;
  free(*path);
  return 0;
}

/* lgetxattr(path, name) -> Buffer, or null when the attribute does not exist */
static napi_value get_xattr(napi_env env, napi_callback_info info) {
  args_t args;
  char *path, *name;
  if (!get_args(env, info, 2, &args) || !path_and_name(env, &args, &path, &name)) return NULL;
  napi_value result = NULL;
  void *value;
  ssize_t size = read_sized(query_value, path, name, &value);
  if (size >= 0) {
    void *data;
    napi_create_buffer_copy(env, (size_t)size, value, &data, &result);
  } else if (errno == ENODATA) {
    napi_get_null(env, &result);
  } else {
    ksr_throw_errno(env, errno, "lgetxattr", path);
  }
  free(value);
  free(name);
  free(path);
  return result;
}

/* lsetxattr(path, name, value: Buffer) */
static napi_value set_xattr(napi_env env, napi_callback_info info) {
  args_t args;
  if (!get_args(env, info, 3, &args)) return NULL;
  void *value;
  size_t size;
  if (napi_get_buffer_info(env, args.values[2], &value, &size) != napi_ok) {
    napi_throw_type_error(env, NULL, "value must be a Buffer");
    return NULL;
  }
  char *path, *name;
  if (!path_and_name(env, &args, &path, &name)) return NULL;
  if (lsetxattr(path, name, value, size, 0) != 0) ksr_throw_errno(env, errno, "lsetxattr", path);
  free(name);
  free(path);
  return NULL;
}

/* lremovexattr(path, name); a missing attribute is not an error */
static napi_value remove_xattr(napi_env env, napi_callback_info info) {
  args_t args;
  char *path, *name;
  if (!get_args(env, info, 2, &args) || !path_and_name(env, &args, &path, &name)) return NULL;
  if (lremovexattr(path, name) != 0 && errno != ENODATA) ksr_throw_errno(env, errno, "lremovexattr", path);
  free(name);
  free(path);
  return NULL;
}

/* mknod(path, mode, major, minor): mode carries the file type (S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK) */
static napi_value make_node(napi_env env, napi_callback_info info) {
  args_t args;
  if (!get_args(env, info, 4, &args)) return NULL;
  uint32_t mode, major_number, minor_number;
  if (!get_uint32(env, args.values[1], "mode", &mode) || !get_uint32(env, args.values[2], "major", &major_number) ||
      !get_uint32(env, args.values[3], "minor", &minor_number))
    return NULL;
  uint32_t type = mode & S_IFMT;
  if (type != S_IFIFO && type != S_IFSOCK && type != S_IFCHR && type != S_IFBLK) {
    napi_throw_type_error(env, NULL, "mknod makes only FIFOs, sockets and device nodes");
    return NULL;
  }
  char *path = ksr_string_arg(env, args.values[0], "path");
  if (path == NULL) return NULL;
  if (mknod(path, (mode_t)mode, makedev(major_number, minor_number)) != 0) ksr_throw_errno(env, errno, "mknod", path);
  free(path);
  return NULL;
}

/* lutimesNs(path, mtimeSeconds, mtimeNanoseconds): sets the modification time exactly and leaves
 * the access time alone; a symlink gets its own time. */
static napi_value set_mtime(napi_env env, napi_callback_info info) {
  args_t args;
  if (!get_args(env, info, 3, &args)) return NULL;
  int64_t seconds;
  uint32_t nanoseconds;
  if (napi_get_value_int64(env, args.values[1], &seconds) != napi_ok) {
    napi_throw_type_error(env, NULL, "seconds must be a number");
    return NULL;
  }
  if (!get_uint32(env, args.values[2], "nanoseconds", &nanoseconds)) return NULL;
  if (nanoseconds >= 1000000000u) {
    napi_throw_range_error(env, NULL, "nanoseconds must be below 1e9");
    return NULL;
  }
  char *path = ksr_string_arg(env, args.values[0], "path");
  if (path == NULL) return NULL;
  struct timespec times[2] = {{.tv_sec = 0, .tv_nsec = UTIME_OMIT}, {.tv_sec = seconds, .tv_nsec = nanoseconds}};
  if (utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0) ksr_throw_errno(env, errno, "utimensat", path);
  free(path);
  return NULL;
}

void ksr_register_fsmeta(napi_env env, napi_value exports) {
  ksr_export(env, exports, "listXattrs", list_xattrs);
  ksr_export(env, exports, "getXattr", get_xattr);
  ksr_export(env, exports, "setXattr", set_xattr);
  ksr_export(env, exports, "removeXattr", remove_xattr);
  ksr_export(env, exports, "mknod", make_node);
  ksr_export(env, exports, "setMtime", set_mtime);
}
