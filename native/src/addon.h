/* The project's one native addon: syscalls Node's fs does not offer. Each area registers its
 * functions on the module's exports from its own file. */
#ifndef KSR_ADDON_H
#define KSR_ADDON_H
#include <node_api.h>

/* Throws a JavaScript Error shaped like Node's fs errors (code, errno, syscall, path). */
void ksr_throw_errno(napi_env env, int error, const char *syscall, const char *path);
/* Copies a string argument into a heap buffer the caller frees; NULL after throwing. */
char *ksr_string_arg(napi_env env, napi_value value, const char *what);
napi_status ksr_export(napi_env env, napi_value exports, const char *name, napi_callback callback);

void ksr_register_fsmeta(napi_env env, napi_value exports);
#endif
