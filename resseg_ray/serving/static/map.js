// resseg-ray map page: the scenes the service knows, their imagery, the model's building
// probability or mask as an overlay, and the building outlines. Everything comes from this
// service (/v1/scenes...); Leaflet is shipped with the page, so it works with no internet.
"use strict";

const map = L.map("map", { zoomControl: true, attributionControl: false, maxZoom: 22 });
map.setView([0, 0], 2);
// map: "" for the served model's map of the scene, "r<N>" for a refinement's
const state = { scene: null, imagery: null, overlay: null, buildings: null, suggestions: null, suggestionCalls: 0, version: 0,
                map: "", refinement: null, pollTimer: null, jobs: new Map() };
// the mapper's annotations of the scene shown: areas and drawn buildings (Leaflet-Geoman
// layers), and the decisions on predicted buildings (key -> "accepted" | "rejected"; the key is
// the predicted id on the served map, "r<N>:<id>" on a refined one), with the accepted outlines
const annotations = L.featureGroup().addTo(map);
const decisions = new Map();
const acceptedGeometry = new Map();
const decisionKey = (id) => (state.map ? `${state.map}:${id}` : id);
let drawKind = null;
const STYLE = {
  area: { color: "#ffffff", weight: 2, dashArray: "6 4", fillOpacity: 0.05 },
  building: { color: "#2da44e", weight: 2, fillOpacity: 0.35 },
};
const PREDICTED = {
  undecided: { color: "#ffd33d", weight: 1.5, fill: false, dashArray: null },
  accepted: { color: "#2da44e", weight: 2.5, fill: true, fillOpacity: 0.3, dashArray: null },
  rejected: { color: "#cf222e", weight: 2, fill: false, dashArray: "3 3" },
};
const $ = (id) => document.getElementById(id);

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function getJSON(url) {
  const r = await fetch(url);
  if (!r.ok) {
    let detail = r.statusText;
    try { detail = (await r.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${url}: ${r.status} ${detail}`);
  }
  return r.json();
}

function tileUrl(scene, layer, extra = "") {
  return `v1/scenes/${encodeURIComponent(scene.id)}/tiles/${layer}/{z}/{x}/{y}.png${extra}`;
}

function mapParam(sep = "?") {
  return state.map ? `${sep}map=${encodeURIComponent(state.map)}` : "";
}

function bandsParam() {
  return `?bands=${$("band-r").value},${$("band-g").value},${$("band-b").value}`;
}

const RETRIES = 6;

function tileLayer(url, scene, options = {}) {
  // Tiles the service refuses for now (503 when its request slots are full: it asks to
  // retry) are asked again with a growing delay instead of staying blank.
  const bounds = L.latLngBounds([scene.bounds[1], scene.bounds[0]], [scene.bounds[3], scene.bounds[2]]);
  const layer = L.tileLayer(url, { bounds, maxZoom: 22, maxNativeZoom: 20, ...options });
  layer.on("tileerror", (e) => {
    const tile = e.tile;
    const tries = Number(tile.dataset.tries || 0);
    if (tries >= RETRIES || !map.hasLayer(layer)) return;
    tile.dataset.tries = String(tries + 1);
    const src = tile.src.replace(/([?&])try=\d+&?/, "$1").replace(/[?&]$/, "");
    setTimeout(() => { tile.src = src + (src.includes("?") ? "&" : "?") + `try=${tries + 1}`; }, 250 * 2 ** tries);
  });
  return layer;
}

function showImagery() {
  if (state.imagery) map.removeLayer(state.imagery);
  state.imagery = null;
  if (state.scene && $("show-imagery").checked) {
    state.imagery = tileLayer(tileUrl(state.scene, "imagery", bandsParam()), state.scene, { zIndex: 1 });
    state.imagery.addTo(map);
  }
}

function showOverlay() {
  if (state.overlay) map.removeLayer(state.overlay);
  state.overlay = null;
  const which = document.querySelector("input[name=overlay]:checked").value;
  if (state.scene && which !== "none" && state.scene.layers.includes(which)) {
    const opacity = $("opacity").value / 100;
    state.overlay = tileLayer(tileUrl(state.scene, which, mapParam()), state.scene, { zIndex: 2, opacity });
    state.overlay.addTo(map);
  }
}

async function showBuildings() {
  if (state.buildings) map.removeLayer(state.buildings);
  state.buildings = null;
  if (!state.scene || !state.scene.buildings || !$("show-buildings").checked) return;
  const scene = state.scene, shown = state.map;
  const collection = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/buildings${mapParam()}`);
  if (state.scene !== scene || state.map !== shown) return; // another scene or map was chosen meanwhile
  if (state.buildings) map.removeLayer(state.buildings);
  state.buildings = L.geoJSON(collection, {
    pmIgnore: true, // the model's outlines are decided on, not edited
    style: (f) => PREDICTED[decisions.get(decisionKey(f.properties.id)) || "undecided"],
    onEachFeature: (f, layer) => {
      const p = f.properties || {};
      const prob = p.mean_probability == null ? "" : `, mean probability ${Number(p.mean_probability).toFixed(2)}`;
      layer.bindTooltip(`building ${p.id}: ${Number(p.area).toFixed(0)} m²${prob}`);
      layer.on("click", () => decide(layer));
    },
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} buildings${shown ? ` (refined map ${shown})` : ""}`);
}

async function showSuggestions() {
  // Only the latest call draws: choosing a scene and ticking the box both call this, and an
  // earlier call's layer drawn then removed could leave its permanent labels behind.
  const call = ++state.suggestionCalls;
  if (state.suggestions) map.removeLayer(state.suggestions);
  state.suggestions = null;
  if (!state.scene || !$("show-suggestions").checked) return;
  const scene = state.scene;
  status(`${scene.id}: ranking regions by the model's uncertainty ...`);
  const collection = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/suggestions?fraction=0.07`);
  if (call !== state.suggestionCalls || state.scene !== scene || !$("show-suggestions").checked) return;
  state.suggestions = L.geoJSON(collection, {
    pmIgnore: true,
    interactive: false,
    style: (f) => ({ color: "#bf8700", weight: f.properties.rank === 1 ? 3 : 1.5, fill: false }),
    onEachFeature: (f, layer) => layer.bindTooltip(`#${f.properties.rank}`, { permanent: true, direction: "center" }),
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} suggested regions, most uncertain first`);
}

function fillBands(scene) {
  for (const [i, id] of ["band-r", "band-g", "band-b"].entries()) {
    const select = $(id);
    select.innerHTML = "";
    scene.bands.forEach((name, k) => select.add(new Option(`${k + 1} ${name}`, String(k + 1))));
    select.value = String(scene.rgb[i]);
  }
}

function showFacts(scene) {
  const facts = [["id", scene.id], ["bands", scene.bands.join(", ")], ["model", scene.model || "?"],
                 ["architecture", scene.architecture || "?"], ["buildings", scene.building_count ?? "?"]];
  $("facts").innerHTML = "";
  for (const [k, v] of facts) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = String(v);
    $("facts").append(dt, dd);
  }
  $("about").hidden = false;
}

function areasUnion() {
  return annotations.getLayers().filter((l) => l.feature && l.feature.properties.kind === "area");
}

function insideAnArea(layer) {
  const c = layer.getBounds().getCenter();
  return areasUnion().some((a) => a.getBounds().contains(c) && pointInPolygon(c, a));
}

function pointInPolygon(latlng, polygonLayer) {
  // ray casting on the outer ring(s) of a Leaflet polygon
  let rings = polygonLayer.getLatLngs();
  while (rings.length && !(rings[0] instanceof L.LatLng)) rings = rings.flat();
  let inside = false;
  for (let i = 0, j = rings.length - 1; i < rings.length; j = i++) {
    const a = rings[i], b = rings[j];
    if ((a.lat > latlng.lat) !== (b.lat > latlng.lat)
        && latlng.lng < ((b.lng - a.lng) * (latlng.lat - a.lat)) / (b.lat - a.lat) + a.lng) inside = !inside;
  }
  return inside;
}

function decide(layer) {
  if (map.pm.globalDrawModeEnabled() || map.pm.globalRemovalModeEnabled()) return; // a click of drawing
  const id = decisionKey(layer.feature.properties.id);
  if (!insideAnArea(layer)) {
    status("draw the annotated area first: only buildings inside it are decided", true);
    return;
  }
  const next = { undefined: "accepted", accepted: "rejected", rejected: undefined }[decisions.get(id)];
  if (next) decisions.set(id, next); else decisions.delete(id);
  if (next === "accepted") acceptedGeometry.set(id, layer.toGeoJSON().geometry);
  else acceptedGeometry.delete(id);
  layer.setStyle(PREDICTED[next || "undecided"]);
  countAnnotations();
}

function countAnnotations() {
  const layers = annotations.getLayers();
  const areas = layers.filter((l) => l.feature.properties.kind === "area").length;
  const drawn = layers.length - areas;
  const accepted = [...decisions.values()].filter((d) => d === "accepted").length;
  const rejected = decisions.size - accepted;
  $("annotation-count").textContent =
    `${areas} areas, ${drawn} drawn and ${accepted} accepted buildings, ${rejected} rejected; saved version ${state.version}`;
}

function setKind(layer, kind, extra = {}) {
  layer.feature = { type: "Feature", properties: { kind, ...extra } };
  layer.setStyle(STYLE[kind]);
  layer.on("pm:edit", countAnnotations);
  annotations.addLayer(layer);
  if (kind === "area") layer.bringToBack(); // the outlines inside it stay clickable
}

function startDrawing(kind, shape) {
  drawKind = kind;
  map.pm.disableGlobalRemovalMode();
  map.pm.enableDraw(shape, { pathOptions: STYLE[kind], templineStyle: STYLE[kind], hintlineStyle: STYLE[kind] });
  for (const id of ["draw-area", "draw-building", "draw-rectangle", "delete-mode"]) $(id).classList.remove("on");
  $(kind === "area" ? "draw-area" : shape === "Rectangle" ? "draw-rectangle" : "draw-building").classList.add("on");
}

map.on("pm:create", (e) => {
  map.removeLayer(e.layer); // Geoman adds it to the map; it belongs to the annotations
  setKind(e.layer, drawKind || "area", drawKind === "building" ? { source: "drawn" } : {});
  for (const id of ["draw-area", "draw-building", "draw-rectangle"]) $(id).classList.remove("on");
  countAnnotations();
});
map.on("pm:remove", (e) => { annotations.removeLayer(e.layer); countAnnotations(); });

function annotationDocument() {
  const features = annotations.getLayers().map((l) => ({ ...l.toGeoJSON(), properties: l.feature.properties }));
  for (const [key, decision] of decisions) {
    if (decision !== "accepted" || !acceptedGeometry.has(key)) continue;
    const [mapId, id] = typeof key === "string" ? key.split(":") : ["", key];
    const properties = { kind: "building", source: "predicted", predicted_id: Number(id) };
    if (mapId) properties.map = mapId;
    features.push({ type: "Feature", geometry: acceptedGeometry.get(key), properties });
  }
  return { type: "FeatureCollection", features };
}

async function saveAnnotations() {
  const scene = state.scene;
  if (!scene) return;
  const headers = authHeaders({ "Content-Type": "application/json" });
  const r = await fetch(`v1/scenes/${encodeURIComponent(scene.id)}/annotations`,
                        { method: "POST", headers, body: JSON.stringify(annotationDocument()) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    status(`not saved: ${answer.detail || r.status}${r.status === 401 ? " (enter the token)" : ""}`, true);
    return;
  }
  state.version = answer.version;
  countAnnotations();
  status(`saved version ${answer.version}: ${answer.areas} areas, ${answer.buildings} buildings`);
}

async function loadAnnotations(scene) {
  annotations.clearLayers();
  decisions.clear();
  acceptedGeometry.clear();
  const saved = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/annotations`);
  if (state.scene !== scene) return;
  state.version = saved.version;
  for (const f of saved.annotations.features) {
    const p = f.properties;
    if (p.source === "predicted" && p.predicted_id != null) {
      const key = p.map ? `${p.map}:${p.predicted_id}` : p.predicted_id;
      decisions.set(key, "accepted");
      acceptedGeometry.set(key, f.geometry);
      continue;
    }
    L.geoJSON(f).eachLayer((layer) => setKind(layer, p.kind, p.source ? { source: p.source } : {}));
  }
  countAnnotations();
}

function updateExports() {
  const base = `v1/scenes/${encodeURIComponent(state.scene.id)}/export`;
  $("export-geojson").href = `${base}?format=geojson${mapParam("&")}`;
  $("export-osm").href = `${base}?format=osm${mapParam("&")}`;
}

function authHeaders(extra = {}) {
  const headers = { ...extra };
  if ($("token").value) headers.Authorization = `Bearer ${$("token").value}`;
  return headers;
}

function refineState(text, error = false) {
  $("refine-state").textContent = text;
  $("refine-state").className = error ? "error" : "";
}

const fmt = (v, digits = 3) => (v == null ? "?" : Number(v).toFixed(digits));

function describe(job) {
  // one line of a refinement's progress, as the page shows it while it runs
  if (job.state === "queued") return `${job.id}: starting`;
  if (job.state === "running" && job.stage === "training") {
    const last = job.history.length ? job.history[job.history.length - 1] : null;
    const losses = last ? ` · train loss ${fmt(last.train_loss)} · val loss ${fmt(last.val_loss)} · val F1 ${fmt(last.val_f1)}` : "";
    const waiting = job.waiting && !last ? ` (${job.waiting})` : "";
    return `${job.id}: training, epoch ${job.epoch}/${job.epochs}${losses}${waiting}`;
  }
  if (job.state === "running") return `${job.id}: mapping the scene with the refined model`;
  if (job.state === "succeeded" && !job.outputs) {
    return `${job.id}: ${job.decision ? job.decision.line : "no map made"}; the served model's map is unchanged`;
  }
  if (job.state === "succeeded") {
    const which = job.decision && job.decision.chosen === "adapted" ? "the served model with BatchNorm re-estimated" : "the refined model";
    return `${job.id}: ended in ${fmt(job.stage_seconds.total, 0)} s; the map of ${which} is shown (${job.decision ? job.decision.line : ""})`;
  }
  if (job.state === "cancelled") return `${job.id}: cancelled; the served model's map is unchanged`;
  return `${job.id} failed: ${job.error}; the served model's map is unchanged`;
}

function showFigures(job) {
  const f = job.figures || {};
  const rows = [
    ["refinement", `${job.id} (${job.epochs} epoch${job.epochs === 1 ? "" : "s"}, from ${job.from || "the served model"})`],
    ["annotated", `${fmt(f.area_percent, 1)} % of the scene, ${f.annotated_buildings} buildings`],
    ["held-out F1", `refined ${fmt(f.f1_heldout_refined)} · served ${fmt(f.f1_heldout_parent)} · BatchNorm re-estimated ${fmt(f.f1_heldout_adapted)} (${f.heldout_pixels} annotated pixels kept out of training)`],
    ["kept", job.decision ? job.decision.chosen : "?"],
    ["buildings", `${f.buildings_before ?? "?"} → ${f.buildings_after ?? "?"}`],
    ["pixels changed", `${fmt(f.changed_percent, 2)} %`],
    ["model", job.alias ? `${job.alias} v${job.registered_version ?? "?"}` : "not registered"],
    ["time", Object.entries(job.stage_seconds || {}).map(([k, v]) => `${k} ${fmt(v, 0)} s`).join(", ")],
  ];
  $("refine-figures").innerHTML = "";
  for (const [k, v] of rows) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v;
    $("refine-figures").append(dt, dd);
  }
}

function addMapOption(job) {
  if ([...$("map-version").options].some((o) => o.value === job.id)) return;
  const f = job.figures || {};
  $("map-version").add(new Option(`refinement ${job.id} (${fmt(f.area_percent, 1)} % annotated)`, job.id));
}

function showMap(version) {
  // the toggle between the served model's map and a refined one: overlay, outlines, export
  state.map = version;
  $("map-version").value = version;
  const job = state.jobs && state.jobs.get(version);
  if (job && job.state === "succeeded") showFigures(job); else $("refine-figures").innerHTML = "";
  showOverlay();
  updateExports();
  return showBuildings();
}

async function loadRefinements(scene) {
  const select = $("map-version");
  while (select.options.length > 1) select.remove(1);
  state.jobs = new Map();
  const listed = (await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/refinements`)).refinements;
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

function follow(scene, job) {
  // poll a refinement's record until it ends, showing its progress
  state.refinement = job;
  $("refine-cancel").hidden = false;
  $("refine-progress").hidden = false;
  const tick = async () => {
    let current;
    try {
      current = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/refinements/${job.id}`);
    } catch (e) {
      refineState(String(e.message || e), true);
      state.pollTimer = setTimeout(tick, 2000);
      return;
    }
    if (state.scene !== scene) return;
    state.jobs.set(current.id, current);
    state.refinement = current;
    $("refine-progress").value = current.epochs ? current.epoch / current.epochs : 0;
    const ended = !["queued", "running"].includes(current.state);
    refineState(describe(current), current.state === "failed");
    if (!ended) { state.pollTimer = setTimeout(tick, 1000); return; }
    stopPolling();
    if (current.state === "succeeded" && current.outputs) {
      addMapOption(current);
      await showMap(current.id);
      refineState(describe(current));
    } else if (current.state === "succeeded") {
      showFigures(current);  // the verdict kept the served model: its figures, no other map
    }
  };
  tick();
}

async function startRefinement() {
  const scene = state.scene;
  if (!scene) return;
  const body = { adapt_bn: $("refine-adapt-bn").checked };
  if ($("refine-epochs").value) body.epochs = Number($("refine-epochs").value);
  if (state.map) body.from = state.map; // refine the refined model further
  const r = await fetch(`v1/scenes/${encodeURIComponent(scene.id)}/refinements`,
                        { method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    const hint = { 401: " (enter the token)", 409: " (save the annotations first)", 503: " (retry when it has ended)" }[r.status] || "";
    refineState(`not started: ${answer.detail || r.status}${hint}`, true);
    return;
  }
  state.jobs.set(answer.id, answer);
  refineState(describe(answer));
  follow(scene, answer);
}

async function cancelRefinement() {
  const scene = state.scene, job = state.refinement;
  if (!scene || !job) return;
  const r = await fetch(`v1/scenes/${encodeURIComponent(scene.id)}/refinements/${job.id}`,
                        { method: "DELETE", headers: authHeaders() });
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) refineState(`not cancelled: ${answer.detail || r.status}${r.status === 401 ? " (enter the token)" : ""}`, true);
}

async function selectScene(scene) {
  state.scene = scene;
  document.querySelectorAll("#scenes button").forEach((b) => b.classList.toggle("active", b.dataset.id === scene.id));
  location.hash = `scene=${encodeURIComponent(scene.id)}`;
  $("layers").hidden = false;
  fillBands(scene);
  showFacts(scene);
  map.fitBounds([[scene.bounds[1], scene.bounds[0]], [scene.bounds[3], scene.bounds[2]]]);
  showImagery();
  showOverlay();
  $("annotate").hidden = false;
  $("refine").hidden = false;
  stopPolling();
  state.map = "";
  state.refinement = null;
  $("refine-figures").innerHTML = "";
  refineState("");
  updateExports();
  status(`${scene.id}: loading`);
  try {
    await loadAnnotations(scene);
    await loadRefinements(scene);
    await showBuildings();
    await showSuggestions();
  } catch (e) { status(String(e.message || e), true); }
}

function listScene(scene) {
  const li = document.createElement("li");
  const b = document.createElement("button");
  b.dataset.id = scene.id;
  b.textContent = scene.id;
  const small = document.createElement("small");
  small.textContent = scene.building_count == null ? scene.bands.join(" ") : `${scene.building_count} buildings`;
  b.append(small);
  b.addEventListener("click", () => selectScene(scene));
  li.append(b);
  $("scenes").append(li);
  $("no-scenes").hidden = true;
}

async function addScene() {
  // an upload (the file's bytes as the body) or an allowed s3:// URI; then wait until segmented
  const file = $("add-file").files[0], uri = $("add-uri").value.trim();
  let name = $("add-name").value.trim();
  if (!file && !uri) { status("choose a GeoTIFF or give an s3:// URI", true); return; }
  if (!name && file) name = file.name.replace(/\.[^.]*$/, "").replace(/[^A-Za-z0-9_.-]+/g, "-").replace(/^[-_.]+/, "");
  const query = name ? `?name=${encodeURIComponent(name)}` : "";
  const init = file
    ? { method: "POST", headers: authHeaders({ "Content-Type": "image/tiff" }), body: file }
    : { method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify({ uri }) };
  status(`sending ${file ? file.name : uri} ...`);
  const started = performance.now();
  const r = await fetch(`v1/scenes${query}`, init);
  const answer = await r.json().catch(() => ({}));
  if (!r.ok) {
    status(`not added: ${answer.detail || r.status}${r.status === 401 ? " (enter the token)" : ""}`, true);
    return;
  }
  for (;;) {
    const current = await getJSON(`v1/scenes/${encodeURIComponent(answer.id)}`);
    if (current.state === "failed") { status(`${answer.id} not added: ${current.error}`, true); return; }
    if (current.state === "ready") {
      listScene(current);
      await selectScene(current);
      status(`${answer.id}: added and segmented in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      return;
    }
    status(`${answer.id}: segmenting ...`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

async function main() {
  let scenes;
  try {
    scenes = (await getJSON("v1/scenes")).scenes;
  } catch (e) {
    status(String(e.message || e), true);
    return;
  }
  $("no-scenes").hidden = scenes.length > 0;
  for (const scene of scenes) listScene(scene);
  for (const id of ["band-r", "band-g", "band-b", "show-imagery"]) $(id).addEventListener("change", showImagery);
  document.querySelectorAll("input[name=overlay]").forEach((r) => r.addEventListener("change", showOverlay));
  $("opacity").addEventListener("input", () => state.overlay && state.overlay.setOpacity($("opacity").value / 100));
  $("show-suggestions").addEventListener("change", () => showSuggestions().catch((e) => status(String(e.message || e), true)));
  $("show-buildings").addEventListener("change", () => showBuildings().catch((e) => status(String(e.message || e), true)));
  $("draw-area").addEventListener("click", () => startDrawing("area", "Polygon"));
  $("draw-building").addEventListener("click", () => startDrawing("building", "Polygon"));
  $("draw-rectangle").addEventListener("click", () => startDrawing("building", "Rectangle"));
  $("delete-mode").addEventListener("click", () => { map.pm.disableDraw(); map.pm.toggleGlobalRemovalMode(); });
  $("save").addEventListener("click", () => saveAnnotations().catch((e) => status(String(e.message || e), true)));
  $("add-scene").addEventListener("click", () => addScene().catch((e) => status(String(e.message || e), true)));
  $("refine-start").addEventListener("click", () => startRefinement().catch((e) => refineState(String(e.message || e), true)));
  $("refine-cancel").addEventListener("click", () => cancelRefinement().catch((e) => refineState(String(e.message || e), true)));
  $("map-version").addEventListener("change", () => showMap($("map-version").value).catch((e) => status(String(e.message || e), true)));
  const wanted = decodeURIComponent((location.hash.match(/scene=([^&]+)/) || [])[1] || "");
  const first = scenes.find((s) => s.id === wanted) || scenes[0];
  if (first) await selectScene(first);
  else status("no scenes");
}

main();
