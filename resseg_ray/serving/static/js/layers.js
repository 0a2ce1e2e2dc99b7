// The scene's layers on the map: its imagery, the model's probability or mask as an overlay,
// the building outlines and the suggested regions to annotate, and the scene's facts. Of a
// damage scene: the pre- and post-event imagery (a swipe between them), the damage classes as
// the overlay and the buildings coloured by class, with the legend.

import { decide, predictedStyle } from "./annotate.js";
import { getJSON, sceneUrl } from "./api.js";
import { $, fillList, status } from "./dom.js";
import { map, mapParam, state } from "./state.js";
import { setSwipe } from "./swipe.js";

const RETRIES = 6;

function tileUrl(scene, layer, extra = "") {
  return sceneUrl(scene, `/tiles/${layer}/{z}/{x}/{y}.png${extra}`);
}

function bandsParam() {
  return `?bands=${$("band-r").value},${$("band-g").value},${$("band-b").value}`;
}

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
    setTimeout(
      () => {
        tile.src = src + (src.includes("?") ? "&" : "?") + `try=${tries + 1}`;
      },
      250 * 2 ** tries,
    );
  });
  return layer;
}

/** The scene's imagery in the bands chosen (or none, unticked); of a damage scene with the swipe
 * ticked, the post-event imagery right of the divider. */
export function showImagery() {
  for (const layer of [state.imagery, state.post]) if (layer) map.removeLayer(layer);
  state.imagery = state.post = null;
  setSwipe(null);
  if (!state.scene || !$("show-imagery").checked) return;
  state.imagery = tileLayer(tileUrl(state.scene, "imagery", bandsParam()), state.scene, { zIndex: 1 });
  state.imagery.addTo(map);
  if (state.scene.kind === "damage" && $("show-swipe").checked) {
    state.post = tileLayer(tileUrl(state.scene, "post"), state.scene, { zIndex: 1 }).addTo(map);
    setSwipe(state.post);
  }
}

/** The scene's controls: the overlays it has; the elements of its kind (data-kind: the swipe,
 * the legend and the hints of a damage scene, the suggestions of a building scene). */
export function fitControls(scene) {
  const damage = scene.kind === "damage";
  const radios = [...document.querySelectorAll("input[name=overlay]")];
  for (const r of radios) r.closest("label").hidden = r.value !== "none" && !scene.layers.includes(r.value);
  const checked = radios.find((r) => r.checked);
  if (!checked || checked.closest("label").hidden) {
    (radios.find((r) => r.value !== "none" && !r.closest("label").hidden) || $("overlay-none")).checked = true;
  }
  document.querySelectorAll("[data-kind]").forEach((e) => (e.hidden = e.dataset.kind !== scene.kind));
  if (damage) $("show-suggestions").checked = false;
  if (!damage) return;
  const legend = $("legend");
  legend.innerHTML = "";
  const drawClass = $("draw-damage");
  const kept = drawClass.value;
  drawClass.innerHTML = "";
  for (const [name, colour] of Object.entries(scene.damage_colours)) {
    const row = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colour;
    const count = scene.damage_counts && scene.damage_counts[name] != null ? ` (${scene.damage_counts[name]})` : "";
    row.append(swatch, `${name}${count}`);
    legend.append(row);
    drawClass.add(new Option(name, name));
  }
  drawClass.value = kept in scene.damage_colours ? kept : Object.keys(scene.damage_colours)[0];
}

/** The overlay chosen (probability, mask or none) of the map shown. */
export function showOverlay() {
  if (state.overlay) map.removeLayer(state.overlay);
  state.overlay = null;
  const which = document.querySelector("input[name=overlay]:checked").value;
  if (state.scene && which !== "none" && state.scene.layers.includes(which)) {
    const opacity = $("opacity").value / 100;
    state.overlay = tileLayer(tileUrl(state.scene, which, mapParam()), state.scene, { zIndex: 2, opacity });
    state.overlay.addTo(map);
  }
}

/** The overlay's opacity, from the slider. */
export function setOpacity() {
  if (state.overlay) state.overlay.setOpacity($("opacity").value / 100);
}

/** The building outlines of the map shown, styled by the mapper's decisions. */
export async function showBuildings() {
  if (state.buildings) map.removeLayer(state.buildings);
  state.buildings = null;
  if (!state.scene || !state.scene.buildings || !$("show-buildings").checked) return;
  const scene = state.scene,
    shown = state.map;
  const collection = await getJSON(sceneUrl(scene, `/buildings${mapParam()}`));
  if (state.scene !== scene || state.map !== shown) return; // another scene or map was chosen meanwhile
  if (state.buildings) map.removeLayer(state.buildings);
  state.buildings = L.geoJSON(collection, {
    pmIgnore: true, // the model's outlines are decided on, not edited
    style: (f) => predictedStyle(f.properties),
    onEachFeature: (f, layer) => {
      const p = f.properties || {};
      const prob = p.mean_probability == null ? "" : `, mean probability ${Number(p.mean_probability).toFixed(2)}`;
      const grade = p.damage == null ? "" : `, ${p.damage} (confidence ${Number(p.confidence).toFixed(2)})`;
      layer.bindTooltip(`building ${p.id}: ${Number(p.area).toFixed(0)} m²${prob}${grade}`);
      layer.on("click", () => decide(layer));
    },
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} buildings${shown ? ` (refined map ${shown})` : ""}`);
}

/** The regions where annotating helps most, ranked by the model's uncertainty (ticked). */
export async function showSuggestions() {
  // Only the latest call draws: choosing a scene and ticking the box both call this, and an
  // earlier call's layer drawn then removed could leave its permanent labels behind.
  const call = ++state.suggestionCalls;
  if (state.suggestions) map.removeLayer(state.suggestions);
  state.suggestions = null;
  if (!state.scene || !$("show-suggestions").checked) return;
  const scene = state.scene;
  status(`${scene.id}: ranking regions by the model's uncertainty ...`);
  const collection = await getJSON(sceneUrl(scene, "/suggestions?fraction=0.07"));
  if (call !== state.suggestionCalls || state.scene !== scene || !$("show-suggestions").checked) return;
  state.suggestions = L.geoJSON(collection, {
    pmIgnore: true,
    interactive: false,
    style: (f) => ({ color: "#bf8700", weight: f.properties.rank === 1 ? 3 : 1.5, fill: false }),
    onEachFeature: (f, layer) => layer.bindTooltip(`#${f.properties.rank}`, { permanent: true, direction: "center" }),
  }).addTo(map);
  status(`${scene.id}: ${collection.features.length} suggested regions, most uncertain first`);
}

/** The band choosers, set to the scene's default RGB. */
export function fillBands(scene) {
  for (const [i, id] of ["band-r", "band-g", "band-b"].entries()) {
    const select = $(id);
    select.innerHTML = "";
    scene.bands.forEach((name, k) => select.add(new Option(`${k + 1} ${name}`, String(k + 1))));
    select.value = String(scene.rgb[i]);
  }
}

/** What the service knows of the scene. */
export function showFacts(scene) {
  const rows = [
    ["id", scene.id],
    ["bands", scene.bands.join(", ")],
    ["model", scene.model || "?"],
    ["architecture", scene.architecture || "?"],
    ["buildings", scene.building_count ?? "?"],
  ];
  if (scene.kind === "damage") {
    rows.splice(2, 0, ["post-event bands", scene.post_bands.join(", ")]);
    const counts = Object.entries(scene.damage_counts || {}).map(([k, v]) => `${v} ${k}`);
    rows.push(["damage", counts.join(", ") || "?"]);
  }
  fillList("facts", rows);
  $("about").hidden = false;
}

/** The export links, for the map shown. */
export function updateExports() {
  const base = sceneUrl(state.scene, "/export");
  $("export-geojson").href = `${base}?format=geojson${mapParam("&")}`;
  $("export-osm").href = `${base}?format=osm${mapParam("&")}`;
}
