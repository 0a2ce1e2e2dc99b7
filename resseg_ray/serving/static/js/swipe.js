// A pre/post swipe: the post-event imagery of a damage scene on the right of a divider the
// mapper drags across the map, the pre-event imagery on its left. The post layer's container
// is clipped (CSS clip-path, in the map pane's pixels) on every move, zoom and drag.

import { map } from "./state.js";

const handle = L.DomUtil.create("input", "swipe", map.getContainer());
Object.assign(handle, { type: "range", min: "0", max: "1", step: "any", value: "0.5", hidden: true });
handle.setAttribute("aria-label", "pre/post swipe: post-event imagery right of the divider");
const divider = L.DomUtil.create("div", "swipe-divider", map.getContainer());
divider.hidden = true;
// dragging the handle must not drag the map
L.DomEvent.disableClickPropagation(handle);
for (const e of ["mousedown", "touchstart", "pointerdown", "dblclick", "wheel"]) {
  L.DomEvent.on(handle, e, L.DomEvent.stopPropagation);
}

let post = null;

/** The divider's position, 0 (left edge: all post-event) to 1 (right edge: all pre-event). */
export const swipePosition = () => Number(handle.value);

function clip() {
  if (!post || !map.hasLayer(post)) return;
  const size = map.getSize();
  const x = size.x * swipePosition();
  const nw = map.containerPointToLayerPoint([0, 0]);
  const se = map.containerPointToLayerPoint(size);
  const left = nw.x + x;
  post.getContainer().style.clipPath =
    `polygon(${left}px ${nw.y}px, ${se.x}px ${nw.y}px, ${se.x}px ${se.y}px, ${left}px ${se.y}px)`;
  divider.style.left = `${x}px`;
}

/** Swipe between the map's pre-event imagery and ``layer`` (the post-event one), or stop (null). */
export function setSwipe(layer) {
  if (post && post !== layer && post.getContainer()) post.getContainer().style.clipPath = "";
  post = layer;
  handle.hidden = divider.hidden = !layer;
  if (layer) {
    if (layer.getContainer()) clip();
    layer.on("add load", clip);
  }
}

handle.addEventListener("input", clip);
map.on("move zoom viewreset resize zoomend moveend", clip);
