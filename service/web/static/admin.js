// The admin page: follows the latest index job while it is queued or running (its state,
// figures and progress bar), then reloads the page to show the new index, or the reason.
"use strict";
(() => {
  const POLL_MS = 1000;

  function follow(panel) {
    const state = panel.querySelector("[data-job-state]");
    const figures = panel.querySelector("[data-job-figures]");
    const bar = panel.querySelector("[data-job-progress]");

    async function poll() {
      let job;
      try {
        const response = await fetch(panel.dataset.jobUrl, {
          headers: { "Accept": "application/json" },
          credentials: "same-origin",
          cache: "no-store",
        });
        if (!response.ok) throw new Error(`status ${response.status}`);
        job = await response.json();
      } catch (error) {
        figures.textContent = "Could not reach the service; trying again…";
        window.setTimeout(poll, POLL_MS * 3);
        return;
      }
      if (["done", "failed", "cancelled"].includes(job.status)) {
        const notice = job.status === "done" ? "?notice=rebuilt" : "";
        window.location.assign(`/admin${notice}#index`);
        return;
      }
      if (state.textContent !== job.state) state.textContent = job.state; // announced
      figures.textContent = job.figures;
      if (bar && job.total) {
        bar.max = job.total;
        bar.value = Math.min(job.done, job.total);
      } else if (bar) {
        bar.removeAttribute("value"); // not yet known: an indeterminate bar
      }
      window.setTimeout(poll, POLL_MS);
    }

    window.setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const panel = document.querySelector("[data-job-url]");
    if (panel && panel.dataset.jobFinished === "no") follow(panel);
  });
})();
