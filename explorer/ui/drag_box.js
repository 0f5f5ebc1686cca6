() => {
  // Drag on the input image to draw the reference box (two clicks still work: the Python pick_box handler).
  // The box is written to the reference textbox in pixels of the uploaded image, as "x1, y1, x2, y2".
  const IMG = "#input-image img", MIN_PX = 6;
  let start = null, frame = null, dragged = false;
  const natural = (img, e) => {  // client point -> image pixel, for object-fit contain or fill
    const r = img.getBoundingClientRect(), nw = img.naturalWidth, nh = img.naturalHeight;
    const contain = getComputedStyle(img).objectFit === "contain";
    const s = contain ? Math.min(r.width / nw, r.height / nh) : null;
    const [sx, sy] = contain ? [s, s] : [r.width / nw, r.height / nh];
    const ox = contain ? (r.width - nw * s) / 2 : 0, oy = contain ? (r.height - nh * s) / 2 : 0;
    const clamp = (v, hi) => Math.round(Math.min(Math.max(v, 0), hi));
    return [clamp((e.clientX - r.left - ox) / sx, nw), clamp((e.clientY - r.top - oy) / sy, nh)];
  };
  const target = (e) => e.target.closest && e.target.closest(IMG);
  document.addEventListener("dragstart", (e) => { if (target(e)) e.preventDefault(); }, true);
  document.addEventListener("pointerdown", (e) => {
    const img = target(e);
    if (!img || !img.naturalWidth || e.button !== 0) return;
    start = {img, x: e.clientX, y: e.clientY, at: natural(img, e)};
    dragged = false;
  }, true);
  document.addEventListener("pointermove", (e) => {
    if (!start) return;
    const w = Math.abs(e.clientX - start.x), h = Math.abs(e.clientY - start.y);
    if (!dragged && Math.max(w, h) < MIN_PX) return;
    dragged = true;
    if (!frame) {
      frame = document.createElement("div");
      frame.id = "drag-box";
      frame.style.cssText = "position:fixed;border:2px solid rgb(0,200,80);pointer-events:none;z-index:1000";
      document.body.appendChild(frame);
    }
    Object.assign(frame.style, {left: Math.min(e.clientX, start.x) + "px", top: Math.min(e.clientY, start.y) + "px",
                                width: w + "px", height: h + "px"});
  }, true);
  document.addEventListener("pointerup", (e) => {
    if (!start) return;
    const s = start;
    start = null;
    if (frame) { frame.remove(); frame = null; }
    if (!dragged) return;
    const [x, y] = natural(s.img, e), [x0, y0] = s.at;
    const box = document.querySelector("#reference textarea, #reference input");
    if (!box || x === x0 || y === y0) return;
    box.value = [Math.min(x, x0), Math.min(y, y0), Math.max(x, x0), Math.max(y, y0)].join(", ");
    box.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
  document.addEventListener("click", (e) => {  // a drag is not also two clicks' first corner
    if (dragged && target(e)) { e.stopPropagation(); e.preventDefault(); dragged = false; }
  }, true);
}
