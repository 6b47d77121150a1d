/* FacePicker: shrink a photo on the device, warn about a poor one, show its faces and let
 * the person pick one. Used by the pages that send photos (sightings, case photos).
 * Needs common.js (Homeward.post, which sends the CSRF token) loaded first.
 *
 *   const result = await FacePicker.open(file, options)
 *     file     a File or Blob the person chose, of any size and orientation
 *     options  {
 *       maxSide,      the longest side, in px, of the copy that is sent (bigger photos shrink)
 *       previewUrl,   answers a multipart POST of `file` with the service's preview JSON:
 *                     {width, height, faces: [{box: [x, y, w, h], size_px, sharpness, issues}]}
 *       canvas,       the <canvas> the photo and its numbered face boxes are drawn on;
 *                     tapping a face on it picks that face
 *       buttons,      optional element filled with one button per face (and "every face")
 *       allowAll,     optional: also offer "Not sure: every face" (selectedBox() is then null)
 *       onWarnings,   optional (warnings) => void: the device's own warnings (too dark,
 *                     blurred), called BEFORE the photo is sent to previewUrl
 *       onPick,       optional (index, face) => void: the chosen face changed; index -1 and
 *                     face null for "every face". Called once with 0 (the largest) at first.
 *     }
 *   → {blob, width, height, faces, warnings}
 *     blob      the JPEG to upload: at most maxSide a side, orientation applied, no metadata
 *     width, height  the blob's size; the faces' boxes are in its pixels
 *     faces     the service's faces, largest first (face 1 on the canvas is faces[0])
 *     warnings  plain-language warnings about the photo (dark, blurred, no face found)
 *   Rejects with the reason (an Error whose message can be shown) when the photo cannot be
 *   read or previewed; with an Error named "AbortError" when a newer open() replaced it.
 *
 *   FacePicker.selectedBox()  → [x, y, w, h] of the chosen face (in the blob's pixels) or null
 *   FacePicker.pick(index)    chooses faces[index] (-1: every face), as a tap would
 *   FacePicker.explain(face)  → plain-language sentences for the face's issues
 *   FacePicker.reset()        forgets the photo (clears the canvas and the buttons)
 *   FacePicker.measure(canvas) → {luminance, sharpness} of a canvas, as the warnings use
 *   FacePicker.limits         the thresholds of those warnings
 */
"use strict";
window.FacePicker = (() => {
  const limits = {
    // Mean grey level (0-255): real photos measured 60-170, the same photos at a quarter of
    // their exposure 26-43 (their faces' detail then nears the service's sharpness floor).
    darkLuminance: 40,
    // Laplacian variance of the sharpest tenth of an 8x8 grid of tiles, on a grey copy about
    // 400 px a side (tiles, so that a plain background does not read as blur): real photos
    // measured 250-16000; blurred by a Gaussian of 2 px at that size (8 px at 1600) 10-66.
    blurSharpness: 50,
    measureSide: 400,
    jpegQuality: 0.9,
  };
  let current = null; // {faces, index, photo, canvas, buttons, onPick, allowAll}
  let generation = 0;

  async function open(file, options) {
    const mine = ++generation;
    const fresh = () => { if (mine !== generation) throw abort(); };
    clear();
    const photo = await fitted(file, options.maxSide);
    fresh();
    const blob = await jpeg(photo);
    fresh();
    const warnings = photoWarnings(measure(photo));
    if (options.onWarnings) options.onWarnings(warnings.slice());
    const body = new FormData();
    body.append("file", blob, "photo.jpg");
    const preview = await Homeward.post(options.previewUrl, body);
    fresh();
    const faces = preview.faces || [];
    if (!faces.length) {
      warnings.push("No face was found in this photo. Try a closer, sharper photo of the face.");
    }
    current = {
      faces, index: faces.length ? 0 : -1, photo, canvas: options.canvas,
      buttons: options.buttons || null, onPick: options.onPick || null,
      allowAll: Boolean(options.allowAll) && faces.length > 1,
    };
    options.canvas.width = photo.width;
    options.canvas.height = photo.height;
    options.canvas.onclick = tapped;
    makeButtons();
    pick(current.index);
    return { blob, width: photo.width, height: photo.height, faces, warnings };
  }

  function abort() {
    const err = new Error("another photo was chosen");
    err.name = "AbortError";
    return err;
  }

  // The photo drawn on a canvas at most maxSide a side, upright (EXIF orientation applied).
  async function fitted(file, maxSide) {
    let source = null;
    let url = null;
    try {
      try {
        source = await createImageBitmap(file, { imageOrientation: "from-image" });
      } catch (err) { // older browsers: an <img> applies the orientation itself
        url = URL.createObjectURL(file);
        source = new Image();
        source.src = url;
        await source.decode();
      }
      const width = source.naturalWidth || source.width;
      const height = source.naturalHeight || source.height;
      const scale = Math.min(1, maxSide / Math.max(width, height));
      const canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(width * scale));
      canvas.height = Math.max(1, Math.round(height * scale));
      const ctx = canvas.getContext("2d");
      ctx.imageSmoothingQuality = "high";
      ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
      return canvas;
    } catch (err) {
      throw new Error("This photo could not be read; please choose a JPEG or PNG photo.");
    } finally {
      if (url) URL.revokeObjectURL(url);
      if (source && source.close) source.close();
    }
  }

  function jpeg(canvas) {
    return new Promise((resolve, reject) => canvas.toBlob(
      (blob) => blob ? resolve(blob) : reject(new Error("The photo could not be prepared.")),
      "image/jpeg", limits.jpegQuality));
  }

  // Mean grey level, and the sharpness of the sharpest tiles of a small grey copy (averaged
  // in whole blocks, so every browser measures the same).
  function measure(canvas) {
    const { width, height } = canvas;
    const rgba = canvas.getContext("2d").getImageData(0, 0, width, height).data;
    return measurePixels(rgba, width, height);
  }

  function measurePixels(rgba, width, height) {
    const f = Math.max(1, Math.floor(Math.max(width, height) / limits.measureSide));
    const w = Math.floor(width / f), h = Math.floor(height / f);
    const grey = new Float64Array(w * h);
    let total = 0;
    for (let y = 0; y < h * f; y++) {
      const row = Math.floor(y / f) * w;
      for (let x = 0; x < w * f; x++) {
        const i = (y * width + x) * 4;
        const v = 0.299 * rgba[i] + 0.587 * rgba[i + 1] + 0.114 * rgba[i + 2];
        grey[row + Math.floor(x / f)] += v;
        total += v;
      }
    }
    const luminance = total / (w * h * f * f);
    const H = h - 2, W = w - 2, grid = 8;
    if (H < grid || W < grid) return { luminance, sharpness: Infinity }; // too small to judge
    const n = new Float64Array(grid * grid), sum = new Float64Array(grid * grid);
    const squares = new Float64Array(grid * grid);
    for (let y = 1; y <= H; y++) {
      const ty = Math.floor((y - 1) * grid / H) * grid;
      for (let x = 1; x <= W; x++) {
        const c = y * w + x;
        const lap = (4 * grey[c] - grey[c - 1] - grey[c + 1] - grey[c - w] - grey[c + w]) / (f * f);
        const t = ty + Math.floor((x - 1) * grid / W);
        n[t] += 1; sum[t] += lap; squares[t] += lap * lap;
      }
    }
    const variances = Array.from(n, (k, t) => squares[t] / k - (sum[t] / k) ** 2);
    variances.sort((a, b) => b - a);
    const top = variances.slice(0, Math.max(1, Math.round(variances.length / 10)));
    return { luminance, sharpness: top.reduce((a, b) => a + b, 0) / top.length };
  }

  function photoWarnings({ luminance, sharpness }) {
    if (luminance < limits.darkLuminance) {
      return ["The photo is very dark: faces may not be found or compared well. " +
        "If you can, take it again with more light."];
    }
    if (sharpness < limits.blurSharpness) {
      return ["The photo looks blurred: hold the phone still, or choose a sharper photo."];
    }
    return [];
  }

  const ISSUES = [
    ["face too small", "is small in the photo; a closer photo (or zoom) compares better."],
    ["face too blurry", "is blurred; a sharper photo compares better."],
    ["face turned too far", "is turned away; a photo from the front compares better."],
  ];

  function explain(face) {
    const n = current ? current.faces.indexOf(face) + 1 : 0;
    const who = n > 0 ? `Face ${n}` : "The face";
    return (face.issues || []).map((issue) => {
      const known = ISSUES.find(([start]) => issue.startsWith(start));
      return known ? `${who} ${known[1]}` : `${who}: ${issue}`;
    });
  }

  function shortIssues(face) {
    if (!face.issues || !face.issues.length) return "looks fine";
    return face.issues.map((issue) => issue.split(":")[0].replace(/^face /, "")).join(", ");
  }

  function makeButtons() {
    const { buttons, faces, allowAll } = current;
    if (!buttons) return;
    buttons.replaceChildren();
    if (faces.length < 1) return;
    const add = (index, title, detail) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.face = String(index);
      button.setAttribute("aria-pressed", "false");
      const small = document.createElement("small");
      small.textContent = detail;
      button.append(title, small);
      button.addEventListener("click", () => pick(index));
      buttons.append(button);
    };
    faces.forEach((face, i) => add(i, `Face ${i + 1}`, (i === 0 ? "largest, " : "") + shortIssues(face)));
    if (allowAll) add(-1, "Not sure", "check every face");
  }

  function pick(index) {
    if (!current || index < -1 || index >= current.faces.length) return;
    if (index === -1 && !current.allowAll && current.faces.length) return;
    current.index = index;
    draw();
    if (current.buttons) {
      current.buttons.querySelectorAll("button").forEach((b) => {
        b.setAttribute("aria-pressed", String(Number(b.dataset.face) === index));
      });
    }
    if (current.onPick) current.onPick(index, index >= 0 ? current.faces[index] : null);
  }

  function draw() {
    const { canvas, photo, faces, index } = current;
    const ctx = canvas.getContext("2d");
    ctx.drawImage(photo, 0, 0);
    const unit = Math.max(photo.width, photo.height);
    const line = Math.max(2, Math.round(unit / 400));
    const size = Math.max(14, Math.round(unit / 35));
    ctx.font = `bold ${size}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    faces.forEach((face, i) => {
      const [x, y, w, h] = face.box;
      const chosen = i === index || index === -1;
      ctx.lineWidth = line * (chosen ? 2 : 1) + 2; // a dark edge so boxes show on any photo
      ctx.strokeStyle = "rgba(0, 0, 0, 0.7)";
      ctx.strokeRect(x, y, w, h);
      ctx.lineWidth = line * (chosen ? 2 : 1);
      ctx.strokeStyle = chosen ? "#f0b400" : "#ffffff";
      ctx.strokeRect(x, y, w, h);
      const label = String(i + 1);
      const pad = Math.round(size / 4);
      const boxW = ctx.measureText(label).width + 2 * pad, boxH = size + 2 * pad;
      const top = y - boxH >= 0 ? y - boxH : y;
      ctx.fillStyle = chosen ? "#f0b400" : "#1f2a33";
      ctx.fillRect(x, top, boxW, boxH);
      ctx.fillStyle = chosen ? "#1f2a33" : "#ffffff";
      ctx.fillText(label, x + pad, top + pad);
    });
  }

  // A tap on the canvas picks the smallest face whose box (a little enlarged, for fingers)
  // holds the point.
  function tapped(event) {
    if (!current || !current.faces.length) return;
    const rect = current.canvas.getBoundingClientRect();
    const px = (event.clientX - rect.left) * current.canvas.width / rect.width;
    const py = (event.clientY - rect.top) * current.canvas.height / rect.height;
    let best = -1;
    current.faces.forEach(({ box: [x, y, w, h] }, i) => {
      const m = Math.max(w, h) * 0.15;
      const inside = px >= x - m && px <= x + w + m && py >= y - m && py <= y + h + m;
      if (inside && (best < 0 || w * h < current.faces[best].box[2] * current.faces[best].box[3])) {
        best = i;
      }
    });
    if (best >= 0) pick(best);
  }

  function selectedBox() {
    if (!current || current.index < 0) return null;
    return current.faces[current.index].box.slice();
  }

  function reset() {
    generation++; // a photo still being read or previewed is dropped too
    clear();
  }

  function clear() {
    if (current) {
      current.canvas.onclick = null;
      if (current.buttons) current.buttons.replaceChildren();
      current.canvas.getContext("2d").clearRect(0, 0, current.canvas.width, current.canvas.height);
    }
    current = null;
  }

  return { open, pick, selectedBox, explain, reset, measure, measurePixels, limits };
})();
