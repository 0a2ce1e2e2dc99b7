// The mapper's annotations of the scene shown: areas and drawn buildings (Leaflet-Geoman
// layers), and the decisions on predicted buildings (key -> "accepted" | "rejected", see
// decisionKey; on a damage scene, key -> the damage class the mapper gave it, or "rejected"),
// with the accepted outlines; saved to and loaded from the service.

import { getJSON, refused, send, sceneUrl } from "./api.js";
import { $, status } from "./dom.js";
import { decisionKey, map, state } from "./state.js";

/** The areas and drawn buildings (Leaflet-Geoman layers). */
export const annotations = L.featureGroup().addTo(map);
/** The decisions on predicted buildings, by decisionKey. */
export const decisions = new Map();
const acceptedGeometry = new Map();
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

const isDamage = () => state.scene && state.scene.kind === "damage";
const colourOf = (grade) => state.scene.damage_colours[grade] || "#8c959f";

/** The style of a drawn building of a damage scene: filled in its class's colour. */
const drawnDamageStyle = (grade) => ({ color: colourOf(grade), weight: 2.5, fillOpacity: 0.45 });

/** The style of a predicted building (its GeoJSON properties) by the mapper's decision on it; of
 * a damage scene, outlined in the model's class colour until the mapper gives it a class, then
 * filled in that class's colour. */
export function predictedStyle(properties) {
  const decision = decisions.get(decisionKey(properties.id));
  if (!isDamage()) return PREDICTED[decision || "undecided"];
  if (decision === "rejected") return PREDICTED.rejected;
  if (decision) return { color: colourOf(decision), weight: 3, fill: true, fillOpacity: 0.5, dashArray: null };
  return { color: colourOf(properties.damage), weight: 1.5, fill: true, fillOpacity: 0.12, dashArray: null };
}

function areas() {
  return annotations.getLayers().filter((l) => l.feature && l.feature.properties.kind === "area");
}

function pointInPolygon(latlng, polygonLayer) {
  // ray casting on the outer ring(s) of a Leaflet polygon
  let rings = polygonLayer.getLatLngs();
  while (rings.length && !(rings[0] instanceof L.LatLng)) rings = rings.flat();
  let inside = false;
  for (let i = 0, j = rings.length - 1; i < rings.length; j = i++) {
    const a = rings[i],
      b = rings[j];
    if (
      a.lat > latlng.lat !== b.lat > latlng.lat &&
      latlng.lng < ((b.lng - a.lng) * (latlng.lat - a.lat)) / (b.lat - a.lat) + a.lng
    )
      inside = !inside;
  }
  return inside;
}

function insideAnArea(layer) {
  const c = layer.getBounds().getCenter();
  return areas().some((a) => a.getBounds().contains(c) && pointInPolygon(c, a));
}

function setDecision(layer, id, next) {
  if (next) decisions.set(id, next);
  else decisions.delete(id);
  if (next && next !== "rejected") acceptedGeometry.set(id, layer.toGeoJSON().geometry);
  else acceptedGeometry.delete(id);
  layer.setStyle(predictedStyle(layer.feature.properties));
  countAnnotations();
}

/** A menu of the damage classes (and "not a building", "undo") at a building; the choice is
 * given to choose(grade), grade null for undo. */
function gradeMenu(layer, current, choose, extra = true) {
  const menu = L.DomUtil.create("div", "grade-menu");
  const options = Object.keys(state.scene.damage_colours).map((g) => [g, g]);
  if (extra) options.push(["rejected", "not a building"], [null, "undo"]);
  for (const [grade, label] of options) {
    const b = L.DomUtil.create("button", grade === current ? "on" : "", menu);
    b.type = "button";
    b.textContent = label;
    b.dataset.grade = grade || "";
    if (grade && grade !== "rejected") b.style.borderLeft = `10px solid ${colourOf(grade)}`;
    b.addEventListener("click", () => {
      map.closePopup();
      choose(grade);
    });
  }
  L.popup({ className: "grade-popup" }).setLatLng(layer.getBounds().getCenter()).setContent(menu).openOn(map);
}

/** A click on a predicted building: undecided -> accepted -> rejected -> undecided; on a damage
 * scene, a menu to give it its damage class (or say it is not a building). */
export function decide(layer) {
  if (map.pm.globalDrawModeEnabled() || map.pm.globalRemovalModeEnabled()) return; // a click of drawing
  const id = decisionKey(layer.feature.properties.id);
  if (!insideAnArea(layer)) {
    status("draw the annotated area first: only buildings inside it are decided", true);
    return;
  }
  if (isDamage()) {
    gradeMenu(layer, decisions.get(id), (grade) => setDecision(layer, id, grade));
    return;
  }
  setDecision(layer, id, { undefined: "accepted", accepted: "rejected", rejected: undefined }[decisions.get(id)]);
}

function countAnnotations() {
  const layers = annotations.getLayers();
  const areaCount = layers.filter((l) => l.feature.properties.kind === "area").length;
  const drawn = layers.length - areaCount;
  const rejected = [...decisions.values()].filter((d) => d === "rejected").length;
  const accepted = decisions.size - rejected;
  $("annotation-count").textContent = isDamage()
    ? `${areaCount} areas, ${drawn} drawn and ${accepted} graded buildings, ${rejected} not buildings; ` +
      `saved version ${state.version}`
    : `${areaCount} areas, ${drawn} drawn and ${accepted} accepted buildings, ${rejected} rejected; ` +
      `saved version ${state.version}`;
}

function setKind(layer, kind, extra = {}) {
  layer.feature = { type: "Feature", properties: { kind, ...extra } };
  const graded = kind === "building" && isDamage();
  if (graded && !extra.damage) layer.feature.properties.damage = $("draw-damage").value;
  layer.setStyle(graded ? drawnDamageStyle(layer.feature.properties.damage) : STYLE[kind]);
  layer.on("pm:edit", countAnnotations);
  if (graded) {
    layer.on("click", () => {
      if (map.pm.globalDrawModeEnabled() || map.pm.globalRemovalModeEnabled()) return;
      const props = layer.feature.properties;
      gradeMenu(layer, props.damage, (grade) => {
        props.damage = grade;
        layer.setStyle(drawnDamageStyle(grade));
      }, false);
    });
  }
  annotations.addLayer(layer);
  if (kind === "area") layer.bringToBack(); // the outlines inside it stay clickable
}

/** Draw an annotated area or a building ("Polygon" or "Rectangle"). */
export function startDrawing(kind, shape) {
  drawKind = kind;
  map.pm.disableGlobalRemovalMode();
  map.pm.enableDraw(shape, { pathOptions: STYLE[kind], templineStyle: STYLE[kind], hintlineStyle: STYLE[kind] });
  for (const id of ["draw-area", "draw-building", "draw-rectangle", "delete-mode"]) $(id).classList.remove("on");
  $(kind === "area" ? "draw-area" : shape === "Rectangle" ? "draw-rectangle" : "draw-building").classList.add("on");
}

/** Remove drawn layers by clicking them (Geoman's removal mode), or stop removing. */
export function toggleDeleting() {
  map.pm.disableDraw();
  map.pm.toggleGlobalRemovalMode();
}

map.on("pm:create", (e) => {
  map.removeLayer(e.layer); // Geoman adds it to the map; it belongs to the annotations
  setKind(e.layer, drawKind || "area", drawKind === "building" ? { source: "drawn" } : {});
  for (const id of ["draw-area", "draw-building", "draw-rectangle"]) $(id).classList.remove("on");
  countAnnotations();
});
map.on("pm:remove", (e) => {
  annotations.removeLayer(e.layer);
  countAnnotations();
});

/** The annotations as the GeoJSON document the service keeps. */
export function annotationDocument() {
  const features = annotations.getLayers().map((l) => ({ ...l.toGeoJSON(), properties: l.feature.properties }));
  for (const [key, decision] of decisions) {
    if (decision === "rejected" || !acceptedGeometry.has(key)) continue;
    const [mapId, id] = typeof key === "string" ? key.split(":") : ["", key];
    const properties = { kind: "building", source: "predicted", predicted_id: Number(id) };
    if (decision !== "accepted") properties.damage = decision; // a damage scene's class
    if (mapId) properties.map = mapId;
    features.push({ type: "Feature", geometry: acceptedGeometry.get(key), properties });
  }
  return { type: "FeatureCollection", features };
}

/** Save the scene's annotations as a new version. */
export async function saveAnnotations() {
  const scene = state.scene;
  if (!scene) return;
  const reply = await send(sceneUrl(scene, "/annotations"), "POST", annotationDocument());
  if (!reply.ok) {
    status(refused("not saved", reply), true);
    return;
  }
  state.version = reply.answer.version;
  countAnnotations();
  status(`saved version ${reply.answer.version}: ${reply.answer.areas} areas, ${reply.answer.buildings} buildings`);
}

/** The scene's saved annotations, drawn again, and its decisions. */
export async function loadAnnotations(scene) {
  annotations.clearLayers();
  decisions.clear();
  acceptedGeometry.clear();
  const saved = await getJSON(sceneUrl(scene, "/annotations"));
  if (state.scene !== scene) return;
  state.version = saved.version;
  for (const f of saved.annotations.features) {
    const p = f.properties;
    if (p.source === "predicted" && p.predicted_id != null) {
      const key = p.map ? `${p.map}:${p.predicted_id}` : p.predicted_id;
      decisions.set(key, p.damage || "accepted");
      acceptedGeometry.set(key, f.geometry);
      continue;
    }
    const extra = { ...(p.source ? { source: p.source } : {}), ...(p.damage ? { damage: p.damage } : {}) };
    L.geoJSON(f).eachLayer((layer) => setKind(layer, p.kind, extra));
  }
  countAnnotations();
}
