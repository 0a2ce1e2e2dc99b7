// The page's elements, its status lines and its one error reporter: every request or action
// that fails ends in report(), as one line where the mapper looks, never in the console only.

export const $ = (id) => document.getElementById(id);

function line(id, text, error) {
  $(id).textContent = text;
  $(id).className = error ? "error" : "";
}

/** The status line under the scene list. */
export const status = (text, error = false) => line("status", text, error);

/** The refinement's line in the "Refine" panel. */
export const refineState = (text, error = false) => line("refine-state", text, error);

/** Say a failure: the status line, or the refinement's line with where = "refine". */
export function report(error, where = "status") {
  const text = String((error && error.message) || error);
  (where === "refine" ? refineState : status)(text, true);
}

/** An action for an event listener whose failure is reported, not lost. */
export const guarded = (action, where = "status") => (...args) => {
  Promise.resolve()
    .then(() => action(...args))
    .catch((e) => report(e, where));
};

/** A definition list's rows: [term, description] pairs, as text. */
export function fillList(id, rows) {
  $(id).innerHTML = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = String(v);
    $(id).append(dt, dd);
  }
}

window.addEventListener("unhandledrejection", (e) => report(e.reason));
