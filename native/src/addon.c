#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "addon.h"

void ksr_throw_errno(napi_env env, int error, const char *syscall, const char *path) {
  const char *code = uv_err_name(-error);
  char message[512];
  snprintf(message, sizeof message, "%s: %s, %s '%s'", code, strerror(error), syscall, path == NULL ? "" : path);
  napi_value code_value, message_value, error_value, errno_value, syscall_value, path_value;
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &message_value);
  napi_create_error(env, code_value, message_value, &error_value);
  napi_create_int32(env, -error, &errno_value);
  napi_set_named_property(env, error_value, "errno", errno_value);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscall_value);
  napi_set_named_property(env, error_value, "syscall", syscall_value);
  if (path != NULL) {
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &path_value);
    napi_set_named_property(env, error_value, "path", path_value);
  }
  napi_throw(env, error_value);
}

char *ksr_string_arg(napi_env env, napi_value value, const char *what) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, NULL, 0, &length) != napi_ok) {
    char message[128];
    snprintf(message, sizeof message, "%s must be a string", what);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  char *text = malloc(length + 1);
  if (text == NULL) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  napi_get_value_string_utf8(env, value, text, length + 1, &length);
  if (strlen(text) != length) {
    free(text);
    char message[128];
    snprintf(message, sizeof message, "%s must not contain NUL", what);
    napi_throw_type_error(env, NULL, message);
    return NULL;
  }
  return text;
}

napi_status ksr_export(napi_env env, napi_value exports, const char *name, napi_callback callback) {
  napi_value function;
  napi_status status = napi_create_function(env, name, NAPI_AUTO_LENGTH, callback, NULL, &function);
  if (status != napi_ok) return status;
  return napi_set_named_property(env, exports, name, function);
}

static napi_value init(napi_env env, napi_value exports) {
  ksr_register_fsmeta(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
