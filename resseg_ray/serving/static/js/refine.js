// Refinements of the model on the scene's annotations: start, follow, cancel, and the toggle
// between the served model's map and a refined one, with the figures of the verdict.

import { getJSON, refused, send, sceneUrl } from "./api.js";
import { $, fillList, refineState, report } from "./dom.js";
import { showBuildings, showOverlay, updateExports } from "./layers.js";
import { state } from "./state.js";

const fmt = (v, digits = 3) => (v == null ? "?" : Number(v).toFixed(digits));

/** One line of a refinement's progress, as the page shows it while it runs. */
function describe(job) {
  if (job.state === "queued") return `${job.id}: starting`;
  if (job.state === "running" && job.stage === "training") {
    const last = job.history.length ? job.history[job.history.length - 1] : null;
    const losses = last
      ? ` · train loss ${fmt(last.train_loss)} · val loss ${fmt(last.val_loss)} · val F1 ${fmt(last.val_f1)}`
      : "";
    const waiting = job.waiting && !last ? ` (${job.waiting})` : "";
    return `${job.id}: training, epoch ${job.epoch}/${job.epochs}${losses}${waiting}`;
  }
  if (job.state === "running") return `${job.id}: mapping the scene with the refined model`;
  if (job.state === "succeeded" && !job.outputs) {
    return `${job.id}: ${job.decision ? job.decision.line : "no map made"}; the served model's map is unchanged`;
  }
  if (job.state === "succeeded") {
    const which =
      job.decision && job.decision.chosen === "adapted"
        ? "the served model with BatchNorm re-estimated"
        : "the refined model";
    const line = job.decision ? job.decision.line : "";
    return `${job.id}: ended in ${fmt(job.stage_seconds.total, 0)} s; the map of ${which} is shown (${line})`;
  }
  if (job.state === "cancelled") return `${job.id}: cancelled; the served model's map is unchanged`;
  return `${job.id} failed: ${job.error}; the served model's map is unchanged`;
}

/** A building count, or a damage map's counts per class ("12 no-damage, 3 destroyed"). */
function count(buildings) {
  if (buildings == null) return "?";
  if (typeof buildings !== "object") return String(buildings);
  return Object.entries(buildings)
    .map(([k, v]) => `${v} ${k}`)
    .join(", ");
}

function showFigures(job) {
  const f = job.figures || {};
  const heldOut =
    `refined ${fmt(f.f1_heldout_refined)} · served ${fmt(f.f1_heldout_parent)} · ` +
    `BatchNorm re-estimated ${fmt(f.f1_heldout_adapted)} (${f.heldout_pixels} annotated pixels kept out of training)`;
  fillList("refine-figures", [
    ["refinement", `${job.id} (${job.epochs} epoch${job.epochs === 1 ? "" : "s"}, from ${job.from || "the served model"})`],
    ["annotated", `${fmt(f.area_percent, 1)} % of the scene, ${f.annotated_buildings} buildings`],
    [job.decision && job.decision.measure ? `held-out ${job.decision.measure}` : "held-out F1", heldOut],
    ["kept", job.decision ? job.decision.chosen : "?"],
    ["buildings", `${count(f.buildings_before)} → ${count(f.buildings_after)}`],
    ["pixels changed", `${fmt(f.changed_percent, 2)} %`],
    ["model", job.alias ? `${job.alias} v${job.registered_version ?? "?"}` : "not registered"],
    [
      "time",
      Object.entries(job.stage_seconds || {})
        .map(([k, v]) => `${k} ${fmt(v, 0)} s`)
        .join(", "),
    ],
  ]);
}

function addMapOption(job) {
  if ([...$("map-version").options].some((o) => o.value === job.id)) return;
  const f = job.figures || {};
  $("map-version").add(new Option(`refinement ${job.id} (${fmt(f.area_percent, 1)} % annotated)`, job.id));
}

/** Show the served model's map ("") or a refinement's: overlay, outlines, export links. */
export function showMap(version) {
  state.map = version;
  $("map-version").value = version;
  const job = state.jobs && state.jobs.get(version);
  if (job && job.state === "succeeded") showFigures(job);
  else $("refine-figures").innerHTML = "";
  showOverlay();
  updateExports();
  return showBuildings();
}

/** The scene's refinements: their maps offered, those still running followed. */
export async function loadRefinements(scene) {
  const select = $("map-version");
  while (select.options.length > 1) select.remove(1);
  state.jobs = new Map();
  const listed = (await getJSON(sceneUrl(scene, "/refinements"))).refinements;
  if (state.scene !== scene) return;
  for (const job of listed) {
    state.jobs.set(job.id, job);
    if (job.state === "succeeded" && job.outputs) addMapOption(job);
    if (job.state === "queued" || job.state === "running") follow(scene, job);
  }
}

function stopPolling() {
  if (state.pollTimer) clearTimeout(state.pollTimer);
  state.pollTimer = null;
  $("refine-cancel").hidden = true;
  $("refine-progress").hidden = true;
}

/** Another scene was chosen: no refinement followed, the served model's map, no figures. */
export function resetRefinement() {
  stopPolling();
  state.map = "";
  state.refinement = null;
  $("refine-figures").innerHTML = "";
  refineState("");
}

function follow(scene, job) {
  // poll a refinement's record until it ends, showing its progress
  state.refinement = job;
  $("refine-cancel").hidden = false;
  $("refine-progress").hidden = false;
  const tick = async () => {
    let current;
    try {
      current = await getJSON(sceneUrl(scene, `/refinements/${job.id}`));
    } catch (e) {
      report(e, "refine");
      state.pollTimer = setTimeout(tick, 2000);
      return;
    }
    if (state.scene !== scene) return;
    state.jobs.set(current.id, current);
    state.refinement = current;
    $("refine-progress").value = current.epochs ? current.epoch / current.epochs : 0;
    const ended = !["queued", "running"].includes(current.state);
    refineState(describe(current), current.state === "failed");
    if (!ended) {
      state.pollTimer = setTimeout(tick, 1000);
      return;
    }
    stopPolling();
    if (current.state === "succeeded" && current.outputs) {
      addMapOption(current);
      await showMap(current.id);
      refineState(describe(current));
    } else if (current.state === "succeeded") {
      showFigures(current); // the verdict kept the served model: its figures, no other map
    }
  };
  tick().catch((e) => report(e, "refine"));
}

/** Refine the model shown on the scene's saved annotations. */
export async function startRefinement() {
  const scene = state.scene;
  if (!scene) return;
  const body = { adapt_bn: $("refine-adapt-bn").checked };
  if ($("refine-epochs").value) body.epochs = Number($("refine-epochs").value);
  if (state.map) body.from = state.map; // refine the refined model further
  const reply = await send(sceneUrl(scene, "/refinements"), "POST", body);
  if (!reply.ok) {
    const hints = { 409: " (save the annotations first)", 503: " (retry when it has ended)" };
    refineState(refused("not started", reply, hints), true);
    return;
  }
  state.jobs.set(reply.answer.id, reply.answer);
  refineState(describe(reply.answer));
  follow(scene, reply.answer);
}

/** Cancel the refinement followed. */
export async function cancelRefinement() {
  const scene = state.scene,
    job = state.refinement;
  if (!scene || !job) return;
  const reply = await send(sceneUrl(scene, `/refinements/${job.id}`), "DELETE");
  if (!reply.ok) refineState(refused("not cancelled", reply), true);
}
