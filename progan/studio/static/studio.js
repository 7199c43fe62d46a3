// progan studio page: plain JavaScript, no build step. The server checks every value sent here.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const PAGE = 32;
  let models = [];
  let model = null;
  let nextSeed = 0;
  const listeners = [];
  // The open face; also what a permalink encodes. A face is a seed, or `latent`: the id of a
  // latent the server keeps (a projected photo), with seed null.
  const state = { model: null, seed: null, label: "", edits: {}, blend: null, t: 0, latent: null };

  async function api(path, options = {}) {
    const res = await fetch(path, options);
    const isJson = (res.headers.get("content-type") || "").includes("json");
    const body = isJson ? await res.json() : null;
    if (!res.ok) {
      const d = body && body.detail;
      throw new Error(typeof d === "string" ? d : d ? JSON.stringify(d) : res.statusText);
    }
    return body;
  }

  function status(text) { $("status").textContent = text; }

  function editsText(edits) {
    return Object.entries(edits || {}).filter(([, v]) => v).map(([k, v]) => `${k}:${v}`).join(",");
  }

  function faceParams(f, size) {
    const p = new URLSearchParams(f.latent ? { latent: f.latent } : { seed: f.seed });
    if (f.label) p.set("label", f.label);
    const e = editsText(f.edits);
    if (e) p.set("edits", e);
    if (f.blend !== null && f.blend !== undefined) { p.set("blend", f.blend); p.set("t", f.t); }
    if (size) p.set("size", size);
    return p;
  }

  function faceUrl(modelId, f, size) {
    return `/api/models/${encodeURIComponent(modelId)}/face.png?${faceParams(f, size)}`;
  }

  function thumbSize(m) { return Math.min(m.resolution, 128); }

  // A tile of a face; `streamed`: its picture comes from a page stream (streamFaces), not a URL.
  function faceTile(modelId, f, caption, onClick, streamed = false) {
    const div = document.createElement("div");
    div.className = "face";
    const img = document.createElement("img");
    img.alt = caption;
    if (!streamed) img.src = faceUrl(modelId, f, thumbSize(models.find((m) => m.id === modelId) || model));
    const span = document.createElement("span");
    span.textContent = caption;
    div.append(img, span);
    div.addEventListener("click", onClick);
    return div;
  }

  // --- browsing -------------------------------------------------------------------------------
  // A page of faces is one request whose answer streams a line {"seed", "png"} per face as soon as
  // the server has rendered it, so the grid fills in a block at a time. Pages still streaming are
  // aborted when the grid is reset: the server then drops their faces not rendered yet.
  const streams = new Set();

  function loadPage() {
    const grid = $("grid");
    const imgs = new Map();
    for (let i = 0; i < PAGE && nextSeed <= model.max_seed; i++, nextSeed++) {
      const seed = nextSeed;
      const tile = faceTile(model.id, { seed, label: state.label }, `${seed}`, () =>
        openFace({ seed, edits: {}, blend: null, t: 0 }), true);
      tile.dataset.seed = seed;
      grid.append(tile);
      imgs.set(seed, tile.querySelector("img"));
    }
    if (imgs.size) streamFaces(model, [...imgs.keys()], state.label, imgs);
  }

  async function streamFaces(m, seeds, label, imgs) {
    const controller = new AbortController();
    streams.add(controller);
    const p = new URLSearchParams({ seeds: seeds.join(","), size: thumbSize(m) });
    if (label) p.set("label", label);
    const url = `/api/models/${encodeURIComponent(m.id)}/faces?${p}`;
    try {
      for (let attempt = 1; ; attempt++) {
        const res = await fetch(url, { signal: controller.signal });
        if (res.status === 503 && attempt < 5) {  // busy: nothing was queued; ask again shortly
          await new Promise((ok) => setTimeout(ok, 1000 * attempt));
          continue;
        }
        if (!res.ok) {
          const body = await res.json().catch(() => null);
          throw new Error((body && body.detail) || res.statusText);
        }
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let rest = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          const lines = (rest + value).split("\n");
          rest = lines.pop();
          for (const line of lines.filter(Boolean)) showFace(JSON.parse(line), imgs);
        }
        return;
      }
    } catch (e) {
      if (e.name !== "AbortError") status(`faces: ${e.message}`);
    } finally {
      streams.delete(controller);
    }
  }

  function showFace(item, imgs) {
    const img = imgs.get(item.seed);
    if (!img) return;
    if (item.png) img.src = `data:image/png;base64,${item.png}`;
    else { img.closest(".face").classList.add("failed"); img.title = item.error || "not rendered"; }
  }

  function resetGrid(start = 0) {
    streams.forEach((c) => c.abort());
    $("grid").replaceChildren();
    nextSeed = start;
    loadPage();
  }

  function selectModel(id) {
    model = models.find((m) => m.id === id) || models[0];
    state.model = model.id;
    $("model").value = model.id;
    const labelSel = $("label");
    labelSel.replaceChildren(new Option("each seed's own", ""));
    (model.label_names.length ? model.label_names : [...Array(model.label_size).keys()].map(String))
      .forEach((name) => labelSel.add(new Option(name, name)));
    $("label-box").hidden = !model.label_size;
    const sliders = $("sliders");
    sliders.replaceChildren();
    for (const d of model.directions) {
      const row = document.createElement("label");
      row.className = "slider";
      const input = document.createElement("input");
      Object.assign(input, { type: "range", min: -model.max_amount, max: model.max_amount, step: 0.1, value: 0 });
      input.dataset.direction = d.name;
      const out = document.createElement("output");
      out.textContent = "0";
      input.addEventListener("input", () => {
        out.textContent = input.value;
        const edits = { ...state.edits, [d.name]: Number(input.value) };
        if (!edits[d.name]) delete edits[d.name];
        setState({ edits });
      });
      row.append(d.name, input, out);
      sliders.append(row);
    }
    $("directions").hidden = !model.directions.length;
  }

  // --- the open face ----------------------------------------------------------------------------
  function permalink() {
    const p = faceParams(state);
    p.set("model", state.model);
    return `${location.origin}/?${p}`;
  }

  let renderTimer = null;
  function render() {
    clearTimeout(renderTimer);  // sliders fire many events: ask for the last position only
    renderTimer = setTimeout(() => {
      if (state.seed === null && !state.latent) return;
      const url = faceUrl(state.model, state);
      $("big").src = url;
      $("download").href = url;
      $("download").download = `${state.model}-${state.latent ? `latent-${state.latent}` : `seed${state.seed}`}${state.blend !== null ? `-blend${state.blend}` : ""}.png`;
      $("permalink").href = permalink();
      history.replaceState(null, "", permalink());
      $("detail-title").textContent = (state.latent ? `latent ${state.latent}` : `seed ${state.seed}`) +
        (state.blend !== null ? ` \u2194 ${state.blend} (${Number(state.t).toFixed(2)})` : "");
      document.querySelectorAll("#grid .face").forEach((el) =>
        el.classList.toggle("selected", Number(el.dataset.seed) === state.seed));
    }, 40);
  }

  function syncControls() {
    $("blend-seed").value = state.blend ?? "";
    $("blend").value = state.t;
    $("blend-value").textContent = Number(state.t).toFixed(2);
    document.querySelectorAll("#sliders input").forEach((el) => {
      el.value = state.edits[el.dataset.direction] || 0;
      el.nextElementSibling.textContent = el.value;
    });
  }

  function setState(patch) {
    Object.assign(state, patch);
    render();
    listeners.forEach((fn) => fn(state));
  }

  function openFace(f) {
    if (f.model && f.model !== model.id) { selectModel(f.model); resetGrid(); }
    if (f.label !== undefined && f.label !== state.label) { state.label = f.label || ""; $("label").value = state.label; }
    $("detail").hidden = false;
    Object.assign(state, { model: model.id, seed: f.seed ?? null, latent: f.latent || null, edits: f.edits || {},
                           blend: f.blend ?? null, t: f.t || 0 });
    syncControls();
    setState({});
  }

  // --- favourites -------------------------------------------------------------------------------
  async function loadFavourites() {
    const items = await api("/api/favourites");
    const list = $("favourite-list");
    list.replaceChildren();
    for (const item of items) {
      const f = item.face;
      if (!models.some((m) => m.id === f.model)) continue;  // a model not served now
      const tile = faceTile(f.model, f, `${f.latent ? "photo" : f.seed}${f.blend !== null ? "\u2194" + f.blend : ""}`, () => openFace(f));
      tile.dataset.favourite = item.id;
      const remove = document.createElement("button");
      remove.className = "remove";
      remove.title = "remove";
      remove.textContent = "\u00d7";
      remove.addEventListener("click", async (ev) => {
        ev.stopPropagation();
        await api(`/api/favourites/${encodeURIComponent(item.id)}`, { method: "DELETE" });
        loadFavourites();
      });
      tile.append(remove);
      list.append(tile);
    }
    $("no-favourites").hidden = list.children.length > 0;
  }

  async function keep() {
    const body = { model: state.model, seed: state.seed, latent: state.latent, label: state.label || null, edits: state.edits,
                   blend: state.blend, t: state.blend !== null ? Number(state.t) : 0 };
    try {
      await api("/api/favourites", { method: "POST", headers: { "content-type": "application/json" },
                                      body: JSON.stringify(body) });
      status(`kept ${state.latent ? "latent " + state.latent : "seed " + state.seed}`);
      loadFavourites();
    } catch (e) { status(e.message); }
  }

  // --- extension panels (see progan/studio/app.py) ------------------------------------------------
  function addPanel(title) {
    const box = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = title;
    box.append(legend);
    $("panels").append(box);
    return box;
  }

  window.studio = {
    state, api, addPanel, setState, open: openFace,
    on: (event, fn) => { if (event === "change") listeners.push(fn); },
    get model() { return model; },
  };

  // --- start ----------------------------------------------------------------------------------------
  async function start() {
    models = await api("/api/models");
    for (const m of models) $("model").add(new Option(m.name, m.id));
    const q = new URLSearchParams(location.search);
    selectModel(q.get("model") || models[0].id);
    if (q.get("label")) { state.label = q.get("label"); $("label").value = state.label; }
    resetGrid();
    if (q.has("seed") || q.has("latent")) {
      const edits = {};
      for (const part of (q.get("edits") || "").split(",").filter(Boolean)) {
        const [k, v] = part.split(":");
        edits[k] = Number(v);
      }
      openFace({ seed: q.has("latent") ? null : Number(q.get("seed")), latent: q.get("latent"), edits, blend: q.has("blend") ? Number(q.get("blend")) : null,
                 t: Number(q.get("t") || 0) });
    }
    await loadFavourites();
    for (const p of await api("/api/panels")) {
      if (!p.script) continue;
      const s = document.createElement("script");
      s.src = p.script;
      document.body.append(s);
    }
    status(`${models.length} model${models.length > 1 ? "s" : ""}`);
  }

  $("model").addEventListener("change", (e) => { selectModel(e.target.value); resetGrid(); $("detail").hidden = true; loadFavourites(); });
  $("label").addEventListener("change", (e) => { state.label = e.target.value; resetGrid(); render(); });
  $("more").addEventListener("click", loadPage);
  $("seed-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const seed = Number($("seed-input").value);
    if (!Number.isInteger(seed) || seed < 0 || seed > model.max_seed) { status(`seeds are 0 to ${model.max_seed}`); return; }
    resetGrid(seed);
    openFace({ seed, edits: {}, blend: null, t: 0 });
  });
  $("close").addEventListener("click", () => { $("detail").hidden = true; state.seed = null; history.replaceState(null, "", "/"); });
  $("keep").addEventListener("click", keep);
  $("blend-seed").addEventListener("change", (e) => {
    const v = e.target.value === "" ? null : Number(e.target.value);
    setState({ blend: v, t: v === null ? 0 : state.t });
    syncControls();
  });
  $("blend").addEventListener("input", (e) => {
    // No second face chosen yet: blend with the next seed, and show it in the box.
    const blend = state.blend ?? (state.seed + 1) % (model.max_seed + 1);
    setState({ blend, t: Number(e.target.value) });
    $("blend-seed").value = blend;
    $("blend-value").textContent = Number(e.target.value).toFixed(2);
  });
  $("reset-edits").addEventListener("click", () => { setState({ edits: {} }); syncControls(); });
  $("big").addEventListener("error", () => status("could not render this face"));
  start().catch((e) => status(`error: ${e.message}`));
})();
