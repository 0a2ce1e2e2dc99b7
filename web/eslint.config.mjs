// ESLint for the map page's ES modules (resseg_ray/serving/static/js), run by `make test`
// from the repository root: `web/node_modules/.bin/eslint -c web/eslint.config.mjs ...`
// (with -c, the patterns below are relative to the repository root).
import js from "@eslint/js";
import globals from "globals";

export default [
  js.configs.recommended,
  {
    files: ["resseg_ray/serving/static/js/**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.browser, L: "readonly" }, // Leaflet (and Geoman on it): classic scripts
    },
    rules: {
      "no-unused-vars": ["error", { args: "after-used" }],
      eqeqeq: ["error", "always", { null: "ignore" }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
];
