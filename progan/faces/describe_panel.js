// The studio's describe box (progan/faces/studio_panel.py): words in, ranked candidates out.
// Clicking a candidate opens it; the page's direction sliders then edit it.
"use strict";
(() => {
  const studio = window.studio;
  const section = document.createElement("section");
  section.id = "describe";
  section.innerHTML = `
    <form id="describe-form">
      <label>describe <input id="describe-text" type="text" maxlength="500" size="50"
        placeholder="a round face with red hair and blue eyes"></label>
      <label>candidates <input id="describe-count" type="number" min="1" max="1000" value="100"></label>
      <button type="submit">find</button>
      <button type="button" id="describe-cancel" hidden>cancel</button>
    </form>
    <p id="describe-status" role="status"></p>
    <div id="describe-results" class="grid"></div>`;
  document.querySelector("main").prepend(section);
  const $ = (id) => document.getElementById(id);

  function open(c) {
    $("detail").hidden = false;
    studio.setState({ seed: c.seed, label: c.label || studio.state.label, edits: {}, blend: null, t: 0 });
  }

  $("describe-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("describe-text").value.trim();
    if (!text) return;
    const model = studio.model;
    $("describe-status").textContent = "generating and measuring...";
    $("describe-results").replaceChildren();
    $("describe-cancel").hidden = false;
    // While the run is in hand: how far it is, polled twice a second.
    const poll = setInterval(async () => {
      try {
        const p = await studio.api("/api/ext/describe/progress");
        if (!p.running) return;
        const best = p.best === null ? "-" : p.best.toFixed(2);
        $("describe-status").textContent =
          `generated ${p.generated}, measured ${p.measured} of ${p.total}, best ${best}`;
      } catch (err) { /* the answer of the run itself says what went wrong */ }
    }, 500);
    try {
      const res = await studio.api("/api/ext/describe/run", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: model.id, text, candidates: Number($("describe-count").value), top: 16 }),
      });
      const unknown = res.unknown.length ? ` | no measurement for: ${res.unknown.join(", ")}` : "";
      const cancelled = res.cancelled ? ` | cancelled: the best of the first ${res.measured}` : "";
      $("describe-status").textContent = `understood: ${res.understood}${unknown}${cancelled}`;
      for (const c of res.candidates) {
        const div = document.createElement("div");
        div.className = "face";
        div.dataset.seed = c.seed;
        const img = document.createElement("img");
        const p = new URLSearchParams({ seed: c.seed, size: Math.min(model.resolution, 128) });
        if (c.label) p.set("label", c.label);
        img.src = `/api/models/${encodeURIComponent(model.id)}/face.png?${p}`;
        const score = c.score === null ? "no face" : c.score.toFixed(2);
        const words = Object.entries(c.words).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ");
        img.alt = `#${c.rank} seed ${c.seed}: ${score}`;
        img.title = words;
        const span = document.createElement("span");
        span.textContent = `#${c.rank} ${c.seed} (${score})`;
        div.append(img, span);
        div.addEventListener("click", () => open(c));
        $("describe-results").append(div);
      }
    } catch (err) {
      $("describe-status").textContent = `describe: ${err.message}`;
    } finally {
      clearInterval(poll);
      $("describe-cancel").hidden = true;
    }
  });

  $("describe-cancel").addEventListener("click", () => {
    studio.api("/api/ext/describe/cancel", { method: "POST" }).catch(() => {});
  });
})();
