// The studio's keep-with button (progan/faces/studio_panel.py, `progan serve --keep-with FILE`):
// the open face's edit, searched nearby for the face on which the server's classifier reads the
// traits not asked for as before the edit (`progan edit --keep-with`). The result opens as a face of
// its own (a stored latent, no edits), so the sliders go on from there.
"use strict";
(() => {
  const studio = window.studio;
  const box = studio.addPanel("hold the rest");
  const p = document.createElement("p");
  p.innerHTML = `
    <button type="button" id="keep-run" disabled>hold what the edit did not ask for</button>
    <span id="keep-status" role="status"></span>`;
  box.append(p);
  const $ = (id) => document.getElementById(id);
  let busy = false;

  function edited(state) { return Object.values(state.edits || {}).some((v) => v); }
  function update(state) { $("keep-run").disabled = busy || !edited(state); }
  studio.on("change", update);
  update(studio.state);
  studio.api("/api/ext/keep/info").then((i) => {
    $("keep-run").title = `searches near the edit for the face on which ${i.classifier} reads ` +
      `the other traits (${i.attributes.join(", ")}) as before it`;
  }).catch(() => {});

  $("keep-run").addEventListener("click", async () => {
    const s = studio.state;
    if (busy || !edited(s)) return;
    busy = true;
    update(s);
    $("keep-status").textContent = "searching...";
    const body = { model: studio.model.id, seed: s.seed, latent: s.latent, label: s.label || null,
                   edits: s.edits, blend: s.blend, t: s.t };
    try {
      const r = await studio.api("/api/ext/keep/run", {
        method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      $("keep-status").textContent = `held: unasked change ${r.unasked_change_before.toFixed(3)} -> ` +
        `${r.unasked_change_after.toFixed(3)}`;
      studio.open({ model: r.model, seed: null, latent: r.latent, label: r.label || "", edits: {}, blend: null, t: 0 });
    } catch (err) {
      $("keep-status").textContent = `hold the rest: ${err.message}`;
    } finally {
      busy = false;
      update(studio.state);
    }
  });
})();
