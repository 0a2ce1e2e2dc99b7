// resseg-ray map page: the scenes the service knows, their imagery, the model's building
// probability or mask as an overlay, and the building outlines; of a damage scene, a pre/post
// swipe, the damage classes and the buildings by class; annotations and refinements.
// Everything comes from this service (/v1/scenes...); Leaflet and Leaflet-Geoman are shipped
// with the page, so it works with no internet.

import {
  annotationDocument,
  annotations,
  decisions,
  loadAnnotations,
  saveAnnotations,
  startDrawing,
  toggleDeleting,
} from "./annotate.js";
import { getJSON, refused, send, sceneUrl } from "./api.js";
import { $, guarded, report, status } from "./dom.js";
import {
  fillBands,
  fitControls,
  setOpacity,
  showBuildings,
  showFacts,
  showImagery,
  showOverlay,
  showSuggestions,
  updateExports,
} from "./layers.js";
import { cancelRefinement, loadRefinements, resetRefinement, showMap, startRefinement } from "./refine.js";
import { map, state } from "./state.js";

async function selectScene(scene) {
  state.scene = scene;
  document.querySelectorAll("#scenes button").forEach((b) => b.classList.toggle("active", b.dataset.id === scene.id));
  location.hash = `scene=${encodeURIComponent(scene.id)}`;
  $("layers").hidden = false;
  fitControls(scene);
  fillBands(scene);
  showFacts(scene);
  map.fitBounds([
    [scene.bounds[1], scene.bounds[0]],
    [scene.bounds[3], scene.bounds[2]],
  ]);
  showImagery();
  showOverlay();
  $("annotate").hidden = false;
  $("refine").hidden = false;
  resetRefinement();
  updateExports();
  status(`${scene.id}: loading`);
  try {
    await loadAnnotations(scene);
    await loadRefinements(scene);
    await showBuildings();
    await showSuggestions();
  } catch (e) {
    report(e);
  }
}

function listScene(scene) {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.dataset.id = scene.id;
  b.textContent = scene.id;
  const small = document.createElement("small");
  const damaged = scene.damage_counts
    ? Object.entries(scene.damage_counts)
        .filter(([k]) => k !== "no-damage")
        .reduce((n, [, v]) => n + v, 0)
    : null;
  small.textContent =
    scene.building_count == null
      ? scene.bands.join(" ")
      : `${scene.building_count} buildings${damaged == null ? "" : `, ${damaged} damaged`}`;
  b.append(small);
  b.addEventListener("click", () => selectScene(scene));
  li.append(b);
  $("scenes").append(li);
  $("no-scenes").hidden = true;
}

async function addScene() {
  // an upload (the file's bytes as the body) or an allowed s3:// URI; then wait until segmented
  const file = $("add-file").files[0],
    uri = $("add-uri").value.trim();
  let name = $("add-name").value.trim();
  if (!file && !uri) {
    status("choose a GeoTIFF or give an s3:// URI", true);
    return;
  }
  if (!name && file) {
    name = file.name
      .replace(/\.[^.]*$/, "")
      .replace(/[^A-Za-z0-9_.-]+/g, "-")
      .replace(/^[-_.]+/, "");
  }
  const query = name ? `?name=${encodeURIComponent(name)}` : "";
  status(`sending ${file ? file.name : uri} ...`);
  const started = performance.now();
  const reply = file
    ? await send(`v1/scenes${query}`, "POST", file, "image/tiff")
    : await send(`v1/scenes${query}`, "POST", { uri });
  if (!reply.ok) {
    status(refused("not added", reply), true);
    return;
  }
  const id = reply.answer.id;
  for (;;) {
    const current = await getJSON(sceneUrl({ id }));
    if (current.state === "failed") {
      status(`${id} not added: ${current.error}`, true);
      return;
    }
    if (current.state === "ready") {
      listScene(current);
      await selectScene(current);
      status(`${id}: added and segmented in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return;
    }
    status(`${id}: segmenting ...`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function main() {
  let scenes;
  try {
    scenes = (await getJSON("v1/scenes")).scenes;
  } catch (e) {
    report(e);
    return;
  }
  $("no-scenes").hidden = scenes.length > 0;
  for (const scene of scenes) listScene(scene);
  for (const id of ["band-r", "band-g", "band-b", "show-imagery", "show-swipe"]) {
    $(id).addEventListener("change", showImagery);
  }
  document.querySelectorAll("input[name=overlay]").forEach((r) => r.addEventListener("change", showOverlay));
  $("opacity").addEventListener("input", setOpacity);
  $("show-suggestions").addEventListener("change", guarded(showSuggestions));
  $("show-buildings").addEventListener("change", guarded(showBuildings));
  $("draw-area").addEventListener("click", () => startDrawing("area", "Polygon"));
  $("draw-building").addEventListener("click", () => startDrawing("building", "Polygon"));
  $("draw-rectangle").addEventListener("click", () => startDrawing("building", "Rectangle"));
  $("delete-mode").addEventListener("click", toggleDeleting);
  $("save").addEventListener("click", guarded(saveAnnotations));
  $("add-scene").addEventListener("click", guarded(addScene));
  $("refine-start").addEventListener("click", guarded(startRefinement, "refine"));
  $("refine-cancel").addEventListener("click", guarded(cancelRefinement, "refine"));
  $("map-version").addEventListener("change", guarded(() => showMap($("map-version").value)));
  const wanted = decodeURIComponent((location.hash.match(/scene=([^&]+)/) || [])[1] || "");
  const first = scenes.find((s) => s.id === wanted) || scenes[0];
  if (first) await selectScene(first);
  else status("no scenes");
}

// What the page shows and holds, for the browser console and the end-to-end tests: read it, the
// page owns it.
window.resseg = { map, state, annotations, decisions, annotationDocument };

main().catch((e) => report(e));
