// The cases pages: the poster's Print button, the enrolled face outlined on each photo, and
// the add-photo form enhanced with the face picker (faces.js): without this script the form
// posts the photo as it is, with the optional face number.
"use strict";
(() => {
  // The Print button is hidden until this script can make it work.
  function printButtons() {
    document.querySelectorAll("[data-print]").forEach((button) => {
      button.classList.remove("hidden");
      button.addEventListener("click", () => window.print());
    });
  }

  // Outline the enrolled face: data-box is its [x, y, w, h] in the photo's pixels,
  // data-size the photo's width and height; percentages keep it right at any display size.
  function faceBoxes() {
    document.querySelectorAll(".photo-frame[data-box]").forEach((frame) => {
      const [x, y, w, h] = frame.dataset.box.split(",").map(Number);
      const [width, height] = (frame.dataset.size || "").split(",").map(Number);
      if (![x, y, w, h, width, height].every(Number.isFinite) || !width || !height) return;
      const box = document.createElement("span");
      box.className = "face-box";
      box.setAttribute("aria-hidden", "true");
      box.style.left = `${(100 * x) / width}%`;
      box.style.top = `${(100 * y) / height}%`;
      box.style.width = `${(100 * w) / width}%`;
      box.style.height = `${(100 * h) / height}%`;
      frame.appendChild(box);
    });
  }

  // Once a photo is chosen, show its faces to pick from; the form then sends the picker's
  // copy of the photo (the boxes are in its pixels) with the chosen face's box.
  function photoForm() {
    const form = document.getElementById("photo-form");
    if (!form || !window.FacePicker || typeof Homeward === "undefined") return;
    const input = form.querySelector('input[name="file"]');
    const preview = document.getElementById("photo-preview");
    const status = document.getElementById("photo-preview-status");
    const warnings = document.getElementById("photo-warnings");
    const error = document.getElementById("photo-error");
    const faceNumber = form.querySelector(".face-number");
    const button = form.querySelector("button[type=submit]");
    const label = button.textContent;
    let chosen = null; // FacePicker.open's result for the current file

    const show = (list) => {
      warnings.replaceChildren(...list.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
      warnings.classList.toggle("hidden", !list.length);
    };
    const usePicker = (on) => {
      faceNumber.classList.toggle("hidden", on);
      if (on) faceNumber.querySelector("input").value = "";
    };

    input.addEventListener("change", async () => {
      chosen = null;
      error.classList.add("hidden");
      show([]);
      usePicker(false);
      const file = input.files && input.files[0];
      if (!file) {
        FacePicker.reset();
        preview.classList.add("hidden");
        return;
      }
      preview.classList.remove("hidden");
      status.textContent = "Looking for faces…";
      try {
        const result = await FacePicker.open(file, {
          maxSide: Number(form.dataset.maxSide),
          previewUrl: form.dataset.previewUrl,
          canvas: document.getElementById("photo-canvas"),
          buttons: document.getElementById("photo-face-buttons"),
          onWarnings: show,
          onPick: (index, face) => {
            if (!chosen || !face) return;
            status.textContent = `Face ${index + 1} of ${chosen.faces.length} will be enrolled.`;
            show([...chosen.warnings, ...FacePicker.explain(face)]);
          },
        });
        chosen = result;
        usePicker(result.faces.length > 0);
        if (result.faces.length) {
          FacePicker.pick(0); // onPick says which face and its warnings
        } else {
          status.textContent = "";
          show(result.warnings);
        }
      } catch (err) {
        if (err.name === "AbortError") return; // another photo was chosen meanwhile
        status.textContent = `${err.message} The photo can still be sent as it is.`;
      }
    });

    form.addEventListener("submit", async (event) => {
      if (!chosen || !chosen.faces.length) return; // the plain form post
      event.preventDefault();
      const body = new FormData(form);
      const box = FacePicker.selectedBox();
      body.set("file", chosen.blob, "photo.jpg");
      body.set("face_box", box ? JSON.stringify(box) : "");
      body.delete("face_number");
      try {
        const sent = await Homeward.post(form.action, body);
        window.location.assign(sent.url);
      } catch (err) {
        error.textContent = err.message;
        error.classList.remove("hidden");
        button.disabled = false; // common.js made it busy
        button.textContent = label;
        const busy = form.querySelector("[data-busy-status]");
        if (busy) busy.textContent = "";
        error.focus();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => { printButtons(); faceBoxes(); photoForm(); });
})();
