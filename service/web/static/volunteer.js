// The volunteer page: the photo is shrunk and checked on the phone, its faces are shown so
// the volunteer picks the child, then the sighting is sent and its reference number shown.
// Also shows the pages' times in the phone's own time zone. Needs common.js and faces.js.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);

  function localTimes() {
    document.querySelectorAll("time[data-local]").forEach((el) => {
      let iso = el.getAttribute("datetime").replace(/(\.\d{3})\d+/, "$1");
      if (!/(Z|[+-]\d\d:\d\d)$/.test(iso)) iso += "Z"; // the service's times are UTC
      const when = new Date(iso);
      if (!Number.isNaN(when.getTime())) {
        el.textContent = when.toLocaleString([], { dateStyle: "medium", timeStyle: "short" });
      }
    });
  }

  // "YYYY-MM-DDTHH:MM" of the phone's clock, for a datetime-local input.
  function localNow() {
    const now = new Date();
    return new Date(now.getTime() - now.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  }

  function setUp(form) {
    const inputs = [$("camera"), $("photo")];
    const canvas = $("preview-canvas");
    let file = null; // the photo as chosen
    let checked = null; // FacePicker's result for it, once previewed
    let checking = null; // the preview under way
    let photoWarnings = [];
    let faceWarnings = [];

    document.querySelectorAll(".js-only").forEach((el) => el.classList.remove("hidden"));
    $("photo").required = false; // either input may hold the photo: checked on sending
    const now = localNow();
    $("seen_at").value = now;
    $("seen_at").max = now;
    $("seen-hint").textContent = "In your phone's time.";

    const status = (text, busy) => {
      $("preview-status").replaceChildren();
      if (busy) {
        const spin = document.createElement("span");
        spin.className = "spinner";
        spin.setAttribute("aria-hidden", "true");
        $("preview-status").append(spin, "\u00a0");
      }
      $("preview-status").append(text);
    };
    const showWarnings = () => {
      const list = $("photo-warnings");
      const all = photoWarnings.concat(faceWarnings);
      list.replaceChildren(...all.map((text) => {
        const item = document.createElement("li");
        item.textContent = text;
        return item;
      }));
      list.classList.toggle("hidden", all.length === 0);
    };
    const showError = (text) => {
      $("send-error").textContent = text;
      $("send-error").classList.toggle("hidden", !text);
    };

    async function choose(input) {
      const chosen = input.files && input.files[0];
      if (!chosen) return;
      inputs.filter((other) => other !== input).forEach((other) => { other.value = ""; });
      file = chosen;
      checked = null;
      photoWarnings = [];
      faceWarnings = [];
      showWarnings();
      showError("");
      $("photo-name").textContent = `Photo: ${chosen.name || "from the camera"}`;
      $("preview").classList.remove("hidden");
      status("Checking the photo…", true);
      checking = FacePicker.open(chosen, {
        maxSide: Number(form.dataset.maxSide),
        previewUrl: form.dataset.previewUrl,
        canvas,
        buttons: $("face-buttons"),
        allowAll: true,
        onWarnings: (warnings) => { photoWarnings = warnings; showWarnings(); },
        onPick: (index, face) => {
          faceWarnings = face ? FacePicker.explain(face) : [];
          showWarnings();
        },
      });
      try {
        checked = await checking;
        photoWarnings = checked.warnings;
        showWarnings();
        const n = checked.faces.length;
        if (n === 0) status("No face was found. Please take or choose another photo.");
        else if (n === 1) status("One face found (box 1). It is the one that will be compared.");
        else {
          status(`${n} faces found. Tap the child's face on the photo or choose it below; ` +
            "face 1, the largest, is chosen now.");
        }
      } catch (err) {
        if (err.name === "AbortError") return; // another photo was chosen meanwhile
        status("");
        showError(err.message);
      }
    }

    function fields() {
      const data = new FormData();
      data.append("file", checked ? checked.blob : file, "sighting.jpg");
      const text = (id) => form.elements[id].value.trim();
      if (text("place")) data.append("place", text("place"));
      if (text("seen_at")) data.append("seen_at", new Date(text("seen_at")).toISOString());
      if (text("estimated_age")) data.append("estimated_age", text("estimated_age"));
      if (text("note")) data.append("note", text("note"));
      const box = checked && FacePicker.selectedBox();
      if (box) data.append("face_box", JSON.stringify(box));
      return data;
    }

    // The sent sighting, first in "Your sightings" (as the page will list it when reloaded).
    function listSent(sent, place) {
      let list = document.querySelector("ul.sightings");
      if (!list) {
        list = document.createElement("ul");
        list.className = "sightings";
        $("no-sightings").replaceWith(list);
      }
      const link = document.createElement("a");
      link.href = sent.url;
      link.className = "ref";
      link.title = `Reference ${sent.id}`;
      link.textContent = sent.id.slice(0, 8);
      const badge = document.createElement("span");
      badge.className = `badge ${sent.status}`;
      badge.textContent = sent.status.replace("_", " ");
      const where = document.createElement("span");
      where.className = "muted";
      where.textContent = place || "Place not given";
      const item = document.createElement("li");
      item.append(link, " ", badge, " ", where);
      list.prepend(item);
    }

    async function send(event) {
      event.preventDefault();
      showError("");
      if (!file) {
        showError("Please take or choose a photo of the child first.");
        return;
      }
      if (checking && !checked) await checking.catch(() => null); // let the preview finish
      if (checked && checked.faces.length === 0) {
        showError("No face was found in this photo. Please take or choose another photo.");
        return;
      }
      const warnings = photoWarnings.concat(faceWarnings);
      if (warnings.length && !window.confirm(`${warnings.join("\n")}\n\nSend this photo anyway?`)) {
        return;
      }
      const button = $("send");
      const label = button.textContent;
      button.disabled = true;
      button.textContent = "Sending…";
      try {
        const sent = await Homeward.post(form.action, fields());
        listSent(sent, form.elements.place.value.trim());
        $("sent-ref").textContent = sent.id;
        $("sent-link").href = sent.url;
        form.classList.add("hidden");
        FacePicker.reset();
        $("sent").classList.remove("hidden");
        $("sent").focus();
      } catch (err) {
        showError(err.message);
      } finally {
        button.disabled = false;
        button.textContent = label;
      }
    }

    inputs.forEach((input) => input.addEventListener("change", () => choose(input)));
    form.addEventListener("submit", send);
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes();
    const form = $("sighting-form");
    if (form) setUp(form);
  });
})();
