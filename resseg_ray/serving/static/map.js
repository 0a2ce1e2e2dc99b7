// resseg-ray map page: the scenes the service knows, their imagery, the model's building
// probability or mask as an overlay, and the building outlines. Everything comes from this
// service (/v1/scenes...); Leaflet is shipped with the page, so it works with no internet.
"use strict";

const map = L.map("map", { zoomControl: true, attributionControl: false, maxZoom: 22 });
map.setView([0, 0], 2);
const state = { scene: null, imagery: null, overlay: null, buildings: null, suggestions: null, version: 0 };
// the mapper's annotations of the scene shown: areas and drawn buildings (Leaflet-Geoman
// layers), and the decisions on predicted buildings (predicted id -> "accepted" | "rejected")
const annotations = L.featureGroup().addTo(map);
const decisions = new Map();
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
    state.overlay = tileLayer(tileUrl(state.scene, which), state.scene, { zIndex: 2, opacity });
    state.overlay.addTo(map);
  }
}

async function showBuildings() {
  if (state.buildings) map.removeLayer(state.buildings);
  state.buildings = null;
  if (!state.scene || !state.scene.buildings || !$("show-buildings").checked) return;
  const scene = state.scene;
  const collection = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/buildings`);
  if (state.scene !== scene) return; // another scene was chosen meanwhile
  state.buildings = L.geoJSON(collection, {
    pmIgnore: true, // the model's outlines are decided on, not edited
    style: (f) => PREDICTED[decisions.get(f.properties.id) || "undecided"],
    onEachFeature: (f, layer) => {
      const p = f.properties || {};
      const prob = p.mean_probability == null ? "" : `, mean probability ${Number(p.mean_probability).toFixed(2)}`;
      layer.bindTooltip(`building ${p.id}: ${Number(p.area).toFixed(0)} m²${prob}`);
      layer.on("click", () => decide(layer));
    },
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} buildings`);
}

async function showSuggestions() {
  if (state.suggestions) map.removeLayer(state.suggestions);
  state.suggestions = null;
  if (!state.scene || !$("show-suggestions").checked) return;
  const scene = state.scene;
  status(`${scene.id}: ranking regions by the model's uncertainty ...`);
  const collection = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/suggestions?fraction=0.07`);
  if (state.scene !== scene || !$("show-suggestions").checked) return;
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
  const id = layer.feature.properties.id;
  if (!insideAnArea(layer)) {
    status("draw the annotated area first: only buildings inside it are decided", true);
    return;
  }
  const next = { undefined: "accepted", accepted: "rejected", rejected: undefined }[decisions.get(id)];
  if (next) decisions.set(id, next); else decisions.delete(id);
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
  if (state.buildings) {
    state.buildings.eachLayer((l) => {
      const id = l.feature.properties.id;
      if (decisions.get(id) === "accepted") {
        features.push({ type: "Feature", geometry: l.toGeoJSON().geometry,
                        properties: { kind: "building", source: "predicted", predicted_id: id } });
      }
    });
  }
  return { type: "FeatureCollection", features };
}

async function saveAnnotations() {
  const scene = state.scene;
  if (!scene) return;
  const headers = { "Content-Type": "application/json" };
  if ($("token").value) headers.Authorization = `Bearer ${$("token").value}`;
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
  const saved = await getJSON(`v1/scenes/${encodeURIComponent(scene.id)}/annotations`);
  if (state.scene !== scene) return;
  state.version = saved.version;
  for (const f of saved.annotations.features) {
    const p = f.properties;
    if (p.source === "predicted" && p.predicted_id != null) { decisions.set(p.predicted_id, "accepted"); continue; }
    L.geoJSON(f).eachLayer((layer) => setKind(layer, p.kind, p.source ? { source: p.source } : {}));
  }
  countAnnotations();
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
  $("export-geojson").href = `v1/scenes/${encodeURIComponent(scene.id)}/export?format=geojson`;
  $("export-osm").href = `v1/scenes/${encodeURIComponent(scene.id)}/export?format=osm`;
  status(`${scene.id}: loading`);
  try {
    await loadAnnotations(scene);
    await showBuildings();
    await showSuggestions();
  } catch (e) { status(String(e.message || e), true); }
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
  for (const scene of scenes) {
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
  }
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
  const wanted = decodeURIComponent((location.hash.match(/scene=([^&]+)/) || [])[1] || "");
  const first = scenes.find((s) => s.id === wanted) || scenes[0];
  if (first) await selectScene(first);
  else status("no scenes");
}

main();
