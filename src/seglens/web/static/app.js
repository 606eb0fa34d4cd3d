// seglens web page: upload an image, show original | overlay | mask with a legend.
// No build step and no third-party code. The server sends the mask as an indexed PNG; the
// overlay is blended here in a canvas, so the opacity slider needs no new request.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    drop: $("drop"), file: $("file"), model: $("model"), alpha: $("alpha"), alphaValue: $("alpha-value"),
    limits: $("limits"), busy: $("busy"), busyText: $("busy-text"), error: $("error"), warning: $("warning"),
    results: $("results"), original: $("original"), overlay: $("overlay"), mask: $("mask"),
    legend: $("legend"), info: $("info"), downloadMask: $("download-mask"), downloadOverlay: $("download-overlay"),
  };
  const MAX_BUSY_RETRIES = 4; // 503 answers are retried after Retry-After, this many times
  let limits = null;
  let current = null; // {file, stem, width, height, base, maskLayer, maskUrl}
  let runId = 0;
  let controller = null;
  let drawPending = false;

  // ------------------------------------------------------------------ small helpers

  function setState(state) { document.body.dataset.state = state; }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = false;
  }

  function clearMessages() {
    els.error.hidden = true;
    els.error.textContent = "";
    els.warning.hidden = true;
  }

  function setBusy(text) {
    els.busy.hidden = !text;
    els.busyText.textContent = text || "";
    document.body.setAttribute("aria-busy", text ? "true" : "false");
  }

  function percent(fraction) {
    return fraction > 0 && fraction < 0.0005 ? "<0.1%" : `${(100 * fraction).toFixed(1)}%`;
  }

  function mib(bytes) {
    return `${(bytes / 2 ** 20).toFixed(1).replace(/\.0$/, "")} MiB`;
  }

  function stemOf(name) {
    const base = (name || "image").split(/[\\/]/).pop();
    return base.replace(/\.[^.]*$/, "") || "image";
  }

  function sleep(ms, signal) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); reject(new DOMException("aborted", "AbortError")); }, { once: true });
    });
  }

  async function errorText(response) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: a proxy's page, say */ }
    if (body && typeof body.error === "string") return body.error;
    return `the server answered ${response.status} ${response.statusText || ""}`.trim();
  }

  function base64ToBlob(text, type) {
    const raw = atob(text);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return new Blob([bytes], { type });
  }

  // ------------------------------------------------------------------ server calls

  async function loadModels() {
    try {
      const response = await fetch("/v1/models");
      if (!response.ok) throw new Error(await errorText(response));
      const data = await response.json();
      limits = data.limits;
      els.model.replaceChildren(...data.models.map((m) => {
        const label = m.meaningful ? m.name : `${m.name} (random weights)`;
        return new Option(label, m.name, m.default, m.default);
      }));
      els.model.disabled = false;
      const mp = limits.max_pixels ? `, ${+(limits.max_pixels / 1e6).toFixed(1)} MP` : "";
      els.limits.textContent = `JPEG, PNG, WebP, BMP, GIF or TIFF, up to ${mib(limits.max_upload_bytes)}${mp}`;
      setState("idle");
    } catch (e) {
      showError(`Cannot load the list of models: ${e.message}. Is the seglens server running?`);
      setState("error");
    }
  }

  async function postSegment(file, { model, format, alpha, signal, busyText }) {
    for (let attempt = 0; ; attempt++) {
      const form = new FormData();
      form.append("file", file);
      form.append("model", model);
      form.append("format", format);
      form.append("alpha", String(alpha));
      let response;
      try {
        response = await fetch("/v1/segment", { method: "POST", body: form, signal });
      } catch (e) {
        if (e.name === "AbortError") throw e;
        throw new Error(`cannot reach the server (${e.message})`);
      }
      if (response.status === 503 && attempt < MAX_BUSY_RETRIES) {
        const wait = Math.min(10, Math.max(1, Number(response.headers.get("Retry-After")) || 1));
        setBusy(`Server busy, retrying in ${wait} s…`);
        await sleep(wait * 1000, signal);
        setBusy(busyText);
        continue;
      }
      if (!response.ok) throw new Error(await errorText(response));
      return response;
    }
  }

  // The picture the mask is drawn over: the browser's own decoding of the file when it can
  // (EXIF rotation applied, as the server does) and it has the size the server segmented;
  // otherwise (TIFF, odd files) the server's decoding: an overlay with alpha 0 is the image.
  async function baseImage(local, file, result, opts) {
    const bitmap = await local;
    if (bitmap && bitmap.width === result.width && bitmap.height === result.height) return bitmap;
    if (bitmap) bitmap.close();
    const response = await postSegment(file, { ...opts, format: "overlay", alpha: 0 });
    return createImageBitmap(await response.blob());
  }

  // ------------------------------------------------------------------ drawing

  // The mask as an RGBA layer: class colours opaque, background (VOC index 0, black) clear.
  function maskLayer(bitmap) {
    const canvas = document.createElement("canvas");
    canvas.width = bitmap.width;
    canvas.height = bitmap.height;
    const ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0);
    const pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const d = pixels.data;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] === 0 && d[i + 1] === 0 && d[i + 2] === 0) d[i + 3] = 0;
    }
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }

  function drawOverlay() {
    drawPending = false;
    if (!current) return;
    const { width, height, base, maskLayer: layer } = current;
    const canvas = els.overlay;
    if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
    const ctx = canvas.getContext("2d");
    ctx.globalAlpha = 1;
    ctx.drawImage(base, 0, 0, width, height);
    ctx.globalAlpha = Number(els.alpha.value) / 100; // (1 - a) * image + a * colour, background untouched
    ctx.drawImage(layer, 0, 0);
    ctx.globalAlpha = 1;
  }

  function renderLegend(classes) {
    els.legend.replaceChildren(...classes.map((c) => {
      const item = document.createElement("li");
      item.dataset.index = String(c.index);
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.backgroundColor = c.hex;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = c.name;
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = percent(c.fraction);
      item.append(swatch, name, pct);
      item.title = `${c.name}: ${c.pixels.toLocaleString()} pixels`;
      return item;
    }));
  }

  function renderInfo(result, roundTripMs) {
    const rows = [
      ["Model", result.model],
      ["Weights", result.weights],
      ["Image", `${result.width} × ${result.height} px`],
      ["Inference", `${(1000 * result.timing.inference_s).toFixed(0)} ms`],
      ["Round trip", `${roundTripMs.toFixed(0)} ms`],
    ];
    els.info.replaceChildren(...rows.flatMap(([key, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = key;
      const dd = document.createElement("dd");
      dd.textContent = value;
      return [dt, dd];
    }));
  }

  function render(result, base, maskBitmap, maskUrl, file, roundTripMs) {
    if (current) {
      current.base.close();
      URL.revokeObjectURL(current.maskUrl);
    }
    current = {
      file, stem: stemOf(file.name), width: result.width, height: result.height,
      base, maskLayer: maskLayer(maskBitmap), maskUrl,
    };
    maskBitmap.close();
    const original = els.original;
    original.width = result.width;
    original.height = result.height;
    original.getContext("2d").drawImage(base, 0, 0, result.width, result.height);
    drawOverlay();
    els.mask.src = maskUrl;
    els.downloadMask.href = maskUrl;
    els.downloadMask.download = `${current.stem}_mask.png`;
    renderLegend(result.classes);
    renderInfo(result, roundTripMs);
    if (!result.meaningful) {
      els.warning.textContent = `The weights are ${result.weights}: the labels show the pipeline works, not what is in the image.`;
      els.warning.hidden = false;
    }
    els.results.hidden = false;
  }

  // ------------------------------------------------------------------ one run

  async function segment(file) {
    if (!file) return;
    const id = ++runId;
    if (controller) controller.abort();
    controller = new AbortController();
    const signal = controller.signal;
    clearMessages();
    if (limits && file.size > limits.max_upload_bytes) {
      showError(`${file.name} is ${mib(file.size)}; this server accepts files up to ${mib(limits.max_upload_bytes)}.`);
      setState("error");
      return;
    }
    const model = els.model.value;
    const busyText = `Segmenting ${file.name} with ${model}…`;
    const opts = { model, signal, busyText };
    setBusy(busyText);
    setState("busy");
    const started = performance.now();
    // Decode locally while the server works; a format the browser cannot show yields null.
    const local = createImageBitmap(file, { imageOrientation: "from-image" }).catch(() => null);
    try {
      const response = await postSegment(file, { ...opts, format: "json", alpha: Number(els.alpha.value) / 100 });
      const result = await response.json();
      const maskBlob = base64ToBlob(result.mask_png, "image/png");
      const maskBitmap = await createImageBitmap(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
      const base = await baseImage(local, file, result, opts);
      if (id !== runId) { base.close(); maskBitmap.close(); return; }
      render(result, base, maskBitmap, URL.createObjectURL(maskBlob), file, performance.now() - started);
      setState("done");
    } catch (e) {
      if (e.name === "AbortError" || id !== runId) return;
      showError(`Could not segment ${file.name}: ${e.message}`);
      setState("error");
      local.then((bitmap) => bitmap && bitmap.close());
    } finally {
      if (id === runId) setBusy("");
    }
  }

  // ------------------------------------------------------------------ events

  els.drop.addEventListener("click", () => els.file.click());
  els.drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); els.file.click(); }
  });
  els.file.addEventListener("change", () => {
    const file = els.file.files[0];
    els.file.value = ""; // choosing the same file again fires "change" again
    segment(file);
  });
  for (const type of ["dragenter", "dragover"]) {
    els.drop.addEventListener(type, (e) => { e.preventDefault(); els.drop.classList.add("over"); });
  }
  els.drop.addEventListener("dragleave", () => els.drop.classList.remove("over"));
  els.drop.addEventListener("drop", (e) => {
    e.preventDefault();
    els.drop.classList.remove("over");
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) segment(file);
  });
  // A file dropped anywhere else must not make the browser navigate away from the page.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());

  els.alpha.addEventListener("input", () => {
    els.alphaValue.textContent = `${els.alpha.value}%`;
    if (!drawPending) { drawPending = true; requestAnimationFrame(drawOverlay); }
  });
  els.model.addEventListener("change", () => { if (current) segment(current.file); });
  els.downloadOverlay.addEventListener("click", () => {
    if (!current) return;
    const stem = current.stem;
    els.overlay.toBlob((blob) => {
      if (!blob) { showError("Could not encode the overlay for download."); return; }
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = `${stem}_overlay.jpg`;
      link.click();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }, "image/jpeg", 0.92);
  });

  loadModels();
})();
