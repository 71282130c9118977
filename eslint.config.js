// @ts-check
import eslint from "@eslint/js";
import tseslint from "typescript-eslint";

export const config = tseslint.config(
  // hack/dashboard-picture is a separate package with its own dependencies, checked by its own `npm run check`.
  { ignores: ["dist/", "coverage/", "node_modules/", "src/gen/", "charts/", "hack/dashboard-picture/"] },
  eslint.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: {
      parserOptions: {
        projectService: { allowDefaultProject: ["*.js", "bin/*.js"] },
        tsconfigRootDir: import.meta.dirname,
      },
    },
    rules: {
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true, allowBoolean: true }],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      // @kubernetes/client-node models are classes that its own docs fill with object literals.
      "@typescript-eslint/no-unsafe-class-instance-assignment": "off",
      "no-restricted-syntax": ["error", { selector: "ExportDefaultDeclaration", message: "Use named exports." }],
    },
  },
  {
    files: ["test/**/*.ts"],
    rules: {
      "@typescript-eslint/no-non-null-assertion": "off",
      "@typescript-eslint/no-floating-promises": [
        "error",
        { allowForKnownSafeCalls: [{ from: "package", package: "node:test", name: ["it", "describe"] }] },
      ],
    },
  },
  { files: ["*.js", "bin/*.js", "**/*.cjs"], ...tseslint.configs.disableTypeChecked },
  {
    files: ["**/*.cjs"],
    languageOptions: {
      sourceType: "commonjs",
      globals: { require: "readonly", module: "writable", process: "readonly" },
    },
    rules: { "@typescript-eslint/no-require-imports": "off" },
  },
  { files: ["bin/*.js"], languageOptions: { globals: { process: "readonly" } } },
);

// ESLint's flat config loader reads the default export; this file is the only exception to the named-exports rule.
// eslint-disable-next-line no-restricted-syntax
export default config;
