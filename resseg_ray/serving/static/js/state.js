// The map and what the page shows on it: the scene, its layers and which map of it.

export const map = L.map("map", { zoomControl: true, attributionControl: false, maxZoom: 22 });
map.setView([0, 0], 2);

export const state = {
  scene: null,
  imagery: null,
  post: null, // a damage scene's post-event imagery, right of the swipe's divider
  overlay: null,
  buildings: null,
  suggestions: null,
  suggestionCalls: 0,
  version: 0, // the saved annotations' version
  map: "", // "" for the served model's map of the scene, "r<N>" for a refinement's
  refinement: null,
  pollTimer: null,
  jobs: new Map(),
};

/** The query parameter that names the map shown (none for the served model's). */
export const mapParam = (sep = "?") => (state.map ? `${sep}map=${encodeURIComponent(state.map)}` : "");

/** A predicted building's key: its id on the served map, "r<N>:<id>" on a refined one. */
export const decisionKey = (id) => (state.map ? `${state.map}:${id}` : id);
