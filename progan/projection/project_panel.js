// The studio's "open a photo" box (progan/projection/studio_panel.py): a photo in, its projection
// into the open model's latent space watched step by step, then the projected face opened like any
// other, so the page's direction sliders edit it.
"use strict";
(() => {
  const studio = window.studio;
  const section = document.createElement("section");
  section.id = "photo";
  section.innerHTML = `
    <form id="photo-form">
      <label>open a photo <input id="photo-file" type="file" accept="image/*"></label>
      <label>steps <input id="photo-steps" type="number" min="1" max="1000" value="200"></label>
      <select id="photo-align" aria-label="alignment">
        <option value="auto" title="as progan project: faces of colour models of 64x64 and more">align: auto</option>
        <option value="on" title="--align">align: on</option>
        <option value="off" title="--no-align: a square photo, resized">align: off</option>
      </select>
      <button type="submit">project</button>
      <button type="button" id="photo-cancel" hidden>cancel</button>
      <progress id="photo-progress" max="1" value="0" hidden></progress>
    </form>
    <p><img id="photo-preview" alt="the photo sent" hidden
      style="height: 64px; vertical-align: middle; margin-right: 8px; border-radius: 4px">
      <span id="photo-status" role="status"></span></p>`;
  // Above the page of faces: opening a photo needs no open face.
  (document.getElementById("browse") || document.querySelector("main")).prepend(section);
  const $ = (id) => document.getElementById(id);
  let poll = null;

  function finish(text) {
    clearInterval(poll);
    poll = null;
    $("photo-cancel").hidden = true;
    $("photo-progress").hidden = true;
    $("photo-status").textContent = text;
  }

  // Twice a second while the projection runs: how far it is, then its outcome.
  async function check() {
    let p;
    try { p = await studio.api("/api/ext/photo/progress"); } catch (err) { return; }
    if (p.state === "projecting") {
      const best = p.best_loss === null ? "-" : p.best_loss.toFixed(4);
      $("photo-progress").max = p.total;
      $("photo-progress").value = p.step;
      $("photo-status").textContent = `projecting: step ${p.step} of ${p.total}, best loss ${best}`;
    } else if (p.state === "done") {
      finish(`projected: PSNR ${p.face.psnr.toFixed(1)} dB; the sliders edit it`);
      studio.open({ model: p.face.model, seed: null, latent: p.face.latent, edits: {}, blend: null, t: 0 });
    } else if (p.state === "cancelled") {
      finish("cancelled");
    } else if (p.state === "failed") {
      finish(`open a photo: ${p.error}`);
    }
  }

  $("photo-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("photo-file").files[0];
    if (!file || poll) return;
    const q = new URLSearchParams({ model: studio.model.id, steps: Number($("photo-steps").value) || 200,
                                    align: $("photo-align").value });
    $("photo-status").textContent = "reading the photo...";
    // The photo as sent, beside the status line, to compare with the projected face.
    URL.revokeObjectURL($("photo-preview").src);
    $("photo-preview").src = URL.createObjectURL(file);
    $("photo-preview").hidden = false;
    try {
      // The file is the request body as it is: the server decodes it in memory.
      await studio.api(`/api/ext/photo/upload?${q}`, {
        method: "POST", headers: { "content-type": "application/octet-stream" }, body: file,
      });
    } catch (err) {
      $("photo-status").textContent = `open a photo: ${err.message}`;
      return;
    }
    $("photo-cancel").hidden = false;
    $("photo-progress").hidden = false;
    poll = setInterval(check, 500);
  });

  // A page opened (or reloaded) while a projection runs follows it; a finished one is not
  // reopened (the projected face stays in the page's history and favourites).
  studio.api("/api/ext/photo/progress").then((p) => {
    if (p.state !== "projecting" || poll) return;
    $("photo-cancel").hidden = false;
    $("photo-progress").hidden = false;
    poll = setInterval(check, 500);
    check();
  }).catch(() => {});

  $("photo-cancel").addEventListener("click", () => {
    studio.api("/api/ext/photo/cancel", { method: "POST" }).catch(() => {});
  });
})();
