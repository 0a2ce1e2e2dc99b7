// resseg-ray map page: the scenes the service knows, their imagery, the model's building
// probability or mask as an overlay, and the building outlines. Everything comes from this
// service (/v1/scenes...); Leaflet is shipped with the page, so it works with no internet.
"use strict";

const map = L.map("map", { zoomControl: true, attributionControl: false, maxZoom: 22 });
map.setView([0, 0], 2);
const state = { scene: null, imagery: null, overlay: null, buildings: null };
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
    style: { color: "#ffd33d", weight: 1.5, fill: false },
    onEachFeature: (f, layer) => {
      const p = f.properties || {};
      const prob = p.mean_probability == null ? "" : `, mean probability ${Number(p.mean_probability).toFixed(2)}`;
      layer.bindTooltip(`building ${p.id}: ${Number(p.area).toFixed(0)} m²${prob}`);
    },
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} buildings`);
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
  status(`${scene.id}: loading`);
  try { await showBuildings(); } catch (e) { status(String(e.message || e), true); }
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
  $("show-buildings").addEventListener("change", () => showBuildings().catch((e) => status(String(e.message || e), true)));
  const wanted = decodeURIComponent((location.hash.match(/scene=([^&]+)/) || [])[1] || "");
  const first = scenes.find((s) => s.id === wanted) || scenes[0];
  if (first) await selectScene(first);
  else status("no scenes");
}

main();
