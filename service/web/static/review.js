// The review page: face boxes, zoom on the faces, and keyboard shortcuts. Nothing here sends
// a decision by itself: a key only chooses one; the reviewer sends it with Enter or the button.
"use strict";
(() => {
  const ZOOM_MIN = 2, ZOOM_MAX = 6;
  const FACE_FILL = 0.7; // a zoomed face fills this share of its frame
  const STEP = 0.05; // arrow keys move the view by this share of the photo
  const frames = [...document.querySelectorAll(".zoom")];
  const zoomAllButton = document.getElementById("zoom-all");
  const form = document.getElementById("decision-form");
  const numbers = (text) => (text || "").split(",").filter(Boolean).map(Number);
  const allZoomed = () => frames.every((f) => f.view || f.closest(".failed"));

  // The face box as shares of the photo (x, y, w, h in 0..1). The box is in the stored
  // photo's pixels (data-size), or the image's own when the size is not given.
  function faceOf(frame) {
    const img = frame.querySelector("img");
    const [x, y, w, h] = numbers(frame.dataset.box);
    const size = numbers(frame.dataset.size);
    const [width, height] = size.length === 2 ? size : [img.naturalWidth, img.naturalHeight];
    if (!(w > 0 && h > 0 && width > 0 && height > 0)) return null;
    return { x: x / width, y: y / height, w: w / width, h: h / height };
  }

  function markFace(frame) {
    const box = frame.querySelector(".face-box");
    const face = faceOf(frame);
    if (!box || !face || !frame.dataset.mark) return;
    box.style.left = `${face.x * 100}%`;
    box.style.top = `${face.y * 100}%`;
    box.style.width = `${face.w * 100}%`;
    box.style.height = `${face.h * 100}%`;
    box.classList.remove("hidden");
  }

  // A zoomed frame shows its photo scaled about a centre (shares of the photo), kept
  // inside the photo so that no empty margin shows.
  function show(frame) {
    const inner = frame.querySelector(".zoom-inner");
    const view = frame.view;
    if (!view) {
      inner.style.transform = "";
      return;
    }
    const half = 0.5 / view.scale;
    view.cx = Math.min(1 - half, Math.max(half, view.cx));
    view.cy = Math.min(1 - half, Math.max(half, view.cy));
    const dx = (0.5 - view.cx * view.scale) * 100;
    const dy = (0.5 - view.cy * view.scale) * 100;
    inner.style.transform = `translate(${dx}%, ${dy}%) scale(${view.scale})`;
  }

  function zoom(frame, on) {
    if (frame.closest(".failed")) return;
    if (on) {
      const face = faceOf(frame) || { x: 0.25, y: 0.25, w: 0.5, h: 0.5 };
      const scale = Math.min(ZOOM_MAX, Math.max(ZOOM_MIN, FACE_FILL / Math.max(face.w, face.h)));
      frame.view = { scale, cx: face.x + face.w / 2, cy: face.y + face.h / 2 };
    } else {
      frame.view = null;
    }
    frame.classList.toggle("zoomed", on);
    frame.setAttribute("aria-pressed", String(on));
    show(frame);
    zoomAllButton?.setAttribute("aria-pressed", String(allZoomed()));
  }

  function zoomAll(on) {
    frames.forEach((frame) => zoom(frame, on));
  }

  frames.forEach((frame) => {
    const img = frame.querySelector("img");
    const figure = frame.closest("figure");
    const loaded = () => {
      figure.classList.remove("loading");
      markFace(frame);
    };
    const failed = () => {
      figure.classList.remove("loading");
      figure.classList.add("failed");
      figure.querySelector(".aged-failed")?.classList.remove("hidden");
    };
    if (img.complete) (img.naturalWidth ? loaded : failed)();
    img.addEventListener("load", loaded);
    img.addEventListener("error", failed);

    frame.addEventListener("click", () => zoom(frame, !frame.view));
    frame.addEventListener("pointermove", (event) => {
      if (!frame.view) return; // the view follows the pointer, like a lens
      const rect = frame.getBoundingClientRect();
      frame.view.cx = (event.clientX - rect.left) / rect.width;
      frame.view.cy = (event.clientY - rect.top) / rect.height;
      show(frame);
    });
    frame.addEventListener("keydown", (event) => {
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
      if (event.key === "Enter" || event.key === " ") {
        zoom(frame, !frame.view);
      } else if (frame.view && moves[event.key]) {
        const [dx, dy] = moves[event.key];
        frame.view.cx += dx * STEP;
        frame.view.cy += dy * STEP;
        show(frame);
      } else {
        return;
      }
      event.preventDefault();
      event.stopPropagation();
    });
  });

  zoomAllButton?.addEventListener("click", () => zoomAll(!allZoomed()));

  // The decision form: the button says what will be sent; Enter on a chosen decision (or
  // Ctrl+Enter in the note) sends it, once.
  const SEND = {
    confirm: ["Send: confirm, the same child", "good"],
    reject: ["Send: reject, not the same child", "danger"],
    unsure: ["Send: unsure", "primary"],
  };
  const status = document.getElementById("decision-status");
  if (form) {
    const button = form.querySelector("button[type=submit]");
    let sent = false;
    form.addEventListener("change", () => {
      const chosen = form.querySelector("input[name=decision]:checked");
      if (!chosen) return;
      const [label, look] = SEND[chosen.value];
      button.textContent = label;
      button.classList.remove("good", "danger", "primary");
      button.classList.add(look);
    });
    form.addEventListener("keydown", (event) => {
      if (event.key !== "Enter") return;
      const onChoice = event.target.matches("input[name=decision]") && event.target.checked;
      const inNote = event.target.matches("textarea") && (event.ctrlKey || event.metaKey);
      if (!onChoice && !inNote) return;
      event.preventDefault();
      form.requestSubmit();
    });
    form.addEventListener("submit", (event) => {
      if (sent) event.preventDefault();
      sent = true;
    });
  }

  function choose(key) {
    const choice = form?.querySelector(`input[data-key="${key}"]`);
    if (!choice) {
      if (status && key === "c") {
        status.textContent = "Your confirmation is already counted; a different reviewer must confirm.";
      }
      return;
    }
    choice.checked = true;
    choice.focus();
    choice.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // Page shortcuts; never while typing in a field.
  const typing = (el) =>
    el instanceof HTMLElement &&
    (el.isContentEditable ||
      el.matches("textarea, select, input:not([type=radio]):not([type=checkbox]):not([type=button]):not([type=submit])"));
  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.altKey || event.ctrlKey || event.metaKey) return;
    if (typing(event.target)) return;
    const key = event.key.toLowerCase();
    if (key === "c" || key === "r" || key === "u") {
      choose(key);
    } else if (key === "z") {
      zoomAll(!allZoomed());
    } else if (key === "escape") {
      zoomAll(false);
    } else if (key === "n") {
      const next = document.getElementById("next-candidate");
      if (!next) return;
      window.location.assign(next.href);
    } else {
      return;
    }
    event.preventDefault();
  });
})();
