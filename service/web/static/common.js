// Shared by the pages: the session's CSRF token on every script POST, and busy buttons.
"use strict";
const Homeward = (() => {
  const csrf = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

  // POST a FormData (or nothing) with the CSRF header; resolves to the parsed JSON body,
  // or throws an Error whose message is the service's own explanation.
  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      body: body || null,
      headers: { "X-CSRF-Token": csrf(), "Accept": "application/json" },
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || `request failed (${response.status})`);
    return data;
  }

  // Forms marked data-busy show a spinner and disable their button while they are sent.
  function busyForms() {
    document.querySelectorAll("form[data-busy]").forEach((form) => {
      form.addEventListener("submit", () => {
        const button = form.querySelector("button[type=submit]");
        if (!button) return;
        button.disabled = true;
        button.insertAdjacentHTML("afterbegin", '<span class="spinner" aria-hidden="true"></span>&nbsp;');
        const status = form.querySelector("[data-busy-status]");
        if (status) status.textContent = form.dataset.busy;
      });
    });
  }

  // Forms marked data-confirm ask before they are sent (deleting, closing).
  function confirmForms() {
    document.querySelectorAll("form[data-confirm]").forEach((form) => {
      form.addEventListener("submit", (event) => {
        if (!window.confirm(form.dataset.confirm)) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => { busyForms(); confirmForms(); });
  return { post, csrf };
})();
