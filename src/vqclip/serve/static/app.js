// The vqclip page: a form built from the server's option declarations, a stage that follows
// one job over Server-Sent Events, and a gallery of every job. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);
const COMMON = ["prompts", "size", "iterations", "seed", "cut_method", "init_image", "image_prompts"];
const HIDDEN = ["device"]; // the server runs each job on a worker's device
const FINISHED = ["done", "partial", "failed", "cancelled"];
const MADE = ["done", "partial"];  // jobs whose images are finished (partial: some stopped early)

const state = {
  info: null,
  fields: [],
  selected: null, // job id shown on the stage
  job: null,
  source: null, // EventSource of the selected job
  losses: [],
  filter: "",
  next: null,
  jobs: new Map(),
  initRef: null,
  ipRef: null,
  set: null, // ids of the jobs made together by "Count", shown as a grid
  watched: new Set(), // jobs submitted from this page: a notification when they end
};

// localStorage throws where storage is off (some private modes, sandboxed frames): the page
// works without it.
const saved = {
  get(key) { try { return localStorage.getItem(key); } catch { return null; } },
  set(key, value) { try { localStorage.setItem(key, value); } catch { /* not kept */ } },
};

// ---------- API ----------

async function api(path, options = {}) {
  const init = { ...options, headers: { ...(options.headers || {}) } };
  if (options.json !== undefined) {
    init.method = init.method || "POST";
    init.body = JSON.stringify(options.json);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (response.status === 401) {
    $("token-dialog").showModal();
    throw new Error("this server needs its token");
  }
  if (response.status === 204) return null;
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return body;
}

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (el.hidden = true), 3500);
}

function randomSeed() {
  return Math.floor(Math.random() * 2 ** 31);
}

function fmtTime(seconds) {
  if (seconds == null || !isFinite(seconds)) return "";
  seconds = Math.max(0, Math.round(seconds));
  const m = Math.floor(seconds / 60), s = seconds % 60;
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m` : `${m}:${String(s).padStart(2, "0")}`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// ---------- the form ----------

function fieldDefault(name) {
  const pair = state.info.pairs[$("model").value];
  if (pair && name in pair.defaults) return pair.defaults[name];
  if (pair && name === "vqgan") return pair.vqgan;
  if (pair && name === "clip") return pair.clip;
  const field = state.fields.find((f) => f.name === name);
  return field ? field.default : null;
}

function inner(schema) {
  // The value schema of a field: a nullable option's non-null branch, a list's items.
  let s = schema;
  if (s.anyOf) s = s.anyOf.find((x) => x.type !== "null") || s.anyOf[0];
  return s;
}

function buildAdvanced() {
  const box = $("advanced-fields");
  box.replaceChildren();
  const groups = new Map();
  for (const f of state.fields) {
    if (COMMON.includes(f.name) || HIDDEN.includes(f.name)) continue;
    if (!groups.has(f.group)) groups.set(f.group, []);
    groups.get(f.group).push(f);
  }
  for (const [group, fields] of groups) {
    const grid = el("div", { class: "grid" });
    for (const f of fields) grid.append(advancedInput(f));
    box.append(el("section", { class: "group" }, el("h3", { text: group }), grid));
  }
  refreshPlaceholders();
}

function advancedInput(f) {
  const s = inner(f.schema);
  const label = el("span", { class: "label", text: f.name.replaceAll("_", " "), title: f.help });
  const wrap = (input, wide) =>
    el("label", { class: "field" + (wide ? " wide" : ""), title: `${f.help}\n${f.flags.join(", ")}` }, label, input);
  if (s.type === "boolean") {
    const input = el("input", { type: "checkbox", "data-option": f.name, "data-kind": "bool" });
    input.checked = !!f.default;
    return el("label", { class: "check", title: f.help }, input, el("span", { text: f.name.replaceAll("_", " ") }));
  }
  if (s.type === "array" && s.items && s.items.enum) {
    const toggles = el("div", { class: "toggles", "data-option": f.name, "data-kind": "toggles" });
    for (const code of s.items.enum) {
      const b = el("button", { type: "button", text: code, "data-code": code });
      b.addEventListener("click", () => { b.classList.toggle("on"); toggles.dataset.touched = "1"; });
      toggles.append(b);
    }
    setToggles(toggles, f.default);
    delete toggles.dataset.touched;
    return wrap(toggles, true);
  }
  if (s.enum) {
    const select = el("select", { "data-option": f.name, "data-kind": "enum" });
    select.append(el("option", { value: "", text: "default" }));
    for (const choice of s.enum) select.append(el("option", { value: choice, text: choice }));
    return wrap(select);
  }
  if (s.type === "array") {
    const input = el("input", { type: "text", "data-option": f.name, "data-kind": `list:${s.items.type}`,
      placeholder: "space-separated" });
    return wrap(input, true);
  }
  const numeric = s.type === "integer" || s.type === "number";
  const input = el("input", {
    type: numeric ? "number" : "text",
    step: s.type === "integer" ? "1" : "any",
    min: s.minimum ?? undefined,
    max: s.maximum ?? undefined,
    "data-option": f.name,
    "data-kind": s.type,
  });
  return wrap(input);
}

function setToggles(box, values) {
  const on = new Set(values || []);
  for (const b of box.children) b.classList.toggle("on", on.has(b.dataset.code));
}

function refreshPlaceholders() {
  const size = fieldDefault("size");
  $("width").placeholder = size ? size[0] : "auto";
  $("height").placeholder = size ? size[1] : "auto";
  $("iterations").placeholder = fieldDefault("iterations");
  const cut = $("cut_method");
  cut.options[0].textContent = `${fieldDefault("cut_method")} (default)`;
  for (const input of document.querySelectorAll("#advanced-fields [data-option]")) {
    const d = fieldDefault(input.dataset.option);
    if (input.dataset.kind === "toggles") {
      if (!input.dataset.touched) setToggles(input, d);
    } else if (input.dataset.kind === "enum") {
      input.options[0].textContent = `${d} (default)`;
    } else if (input.dataset.kind !== "bool") {
      input.placeholder = d === null || d === undefined || (Array.isArray(d) && !d.length)
        ? (input.placeholder || "") : Array.isArray(d) ? d.join(" ") : String(d);
    }
  }
}

function buildForm() {
  const model = $("model");
  const ready = Object.entries(state.info.pairs);
  for (const [name, pair] of ready) {
    const label = pair.ready ? name
      : state.info.allow_downloads ? `${name} (downloads weights)` : `${name} (weights not on this server)`;
    const option = el("option", { value: name, text: label });
    // a pair this server can neither find nor fetch is shown, but cannot be picked
    option.disabled = !pair.ready && !state.info.allow_downloads;
    model.append(option);
  }
  const last = saved.get("vqclip.model");
  const firstReady = ready.find(([, p]) => p.ready && p.vqgan.startsWith("vqgan_"));
  const usable = (n) => state.info.pairs[n] && (state.info.pairs[n].ready || state.info.allow_downloads);
  model.value = last && usable(last) ? last : firstReady ? firstReady[0] : "toy";
  const cut = $("cut_method");
  cut.append(el("option", { value: "", text: "default" }));
  const cutField = state.fields.find((f) => f.name === "cut_method");
  for (const choice of inner(cutField.schema).enum) cut.append(el("option", { value: choice, text: choice }));
  if (!state.info.video) { $("video").checked = false; $("video-check").hidden = true; }
  buildAdvanced();
  model.addEventListener("change", () => { saved.set("vqclip.model", model.value); refreshPlaceholders(); });
  $("dice").addEventListener("click", () => ($("seed").value = randomSeed()));
  $("reset-advanced").addEventListener("click", buildAdvanced);
  $("create").addEventListener("submit", (e) => { e.preventDefault(); submitForm(); });
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submitForm(); }
  });
  setupUpload("init", (ref) => (state.initRef = ref));
  setupUpload("ip", (ref) => (state.ipRef = ref));
}

async function uploadImage(blob, prefix, set) {
  const thumb = $(`${prefix}-thumb`), clear = $(`${prefix}-clear`);
  const answer = await api("/api/uploads", { method: "POST", body: blob,
    headers: { "Content-Type": "application/octet-stream" } });
  set(answer.ref);
  thumb.src = answer.url; thumb.hidden = false; clear.hidden = false;
}

function useAsInit(blob) {
  return uploadImage(blob, "init", (ref) => (state.initRef = ref));
}

async function copy(text, done) {
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // No clipboard API (a plain-http host other than localhost): the old way.
    const area = el("textarea", { class: "offscreen" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) return toast("Copying is not allowed here");
  }
  toast(done);
}

function setupUpload(prefix, set) {
  const file = $(`${prefix}-file`), thumb = $(`${prefix}-thumb`), clear = $(`${prefix}-clear`);
  const drop = $(`${prefix}-drop`);
  const upload = async (blob) => {
    try { await uploadImage(blob, prefix, set); } catch (err) { showFormError(err.message); }
  };
  $(`${prefix}-pick`).addEventListener("click", () => file.click());
  file.addEventListener("change", () => file.files[0] && upload(file.files[0]));
  clear.addEventListener("click", () => { set(null); thumb.hidden = true; clear.hidden = true; file.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    if (e.dataTransfer.files[0]) upload(e.dataTransfer.files[0]);
  });
}

function readForm() {
  const job = { prompt: $("prompt").value.trim(), model: $("model").value, video: $("video").checked };
  const w = $("width").value, h = $("height").value;
  if (w || h) {
    const d = fieldDefault("size") || [w || h, h || w];
    job.size = [Number(w || d[0]), Number(h || d[1])];
  }
  if ($("iterations").value) job.iterations = Number($("iterations").value);
  // A seed goes as a decimal string: a JavaScript number is exact only up to 2**53.
  const seed = $("seed").value.trim();
  if (seed !== "") job.seed = seed;
  if ($("cut_method").value) job.cut_method = $("cut_method").value;
  if (state.initRef) job.init_image = state.initRef;
  if (state.ipRef) job.image_prompts = [state.ipRef];
  for (const input of document.querySelectorAll("#advanced-fields [data-option]")) {
    const name = input.dataset.option, kind = input.dataset.kind;
    if (kind === "bool") {
      if (input.checked !== !!fieldDefault(name)) job[name] = input.checked;
    } else if (kind === "toggles") {
      if (input.dataset.touched) job[name] = [...input.children].filter((b) => b.classList.contains("on")).map((b) => b.dataset.code);
    } else if (input.value.trim() !== "") {
      const text = input.value.trim();
      if (kind.startsWith("list:")) {
        const items = text.split(/[\s,]+/).filter(Boolean);
        job[name] = kind === "list:string" ? items : items.map(Number);
      } else if (kind === "integer" || kind === "number") job[name] = Number(text);
      else job[name] = text;
    }
  }
  return job;
}

function showFormError(text) {
  const box = $("form-error");
  box.textContent = text || "";
  box.hidden = !text;
}

async function submitForm() {
  showFormError("");
  const job = readForm();
  if (!job.prompt && !job.image_prompts) return showFormError("Write a prompt first.");
  if (job.seed !== undefined && !/^[0-9]+$/.test(job.seed)) return showFormError("The seed is a whole number, 0 or more.");
  const count = Number($("count").value || 1);
  if (!Number.isInteger(count) || count < 1 || count > 16) return showFormError("Count is a whole number from 1 to 16.");
  if (count === 1) return submit(job);
  // Seeds as BigInt: the seed given, then the next ones, exact up to 2**63 - 1.
  const seeds = job.seed === undefined ? null : [...Array(count).keys()].map((i) => BigInt(job.seed) + BigInt(i));
  if (seeds && seeds[count - 1] >= 2n ** 63n) return showFormError(`The seeds go up to ${seeds[count - 1]}, past 2^63 - 1: give a smaller seed.`);
  await submitSet(count, (i) => (seeds ? { ...job, seed: String(seeds[i]) } : job));
}

async function submit(job) {
  const button = $("submit");
  button.disabled = true;
  try {
    const created = await api("/api/jobs", { json: job });
    state.jobs.set(created.id, created);
    state.watched.add(created.id);
    select(created.id);
    refreshGallery();
  } catch (err) {
    showFormError(err.message);
    toast(err.message); // Rerun and Vary are far from the form's error line
  } finally {
    button.disabled = false;
  }
}

async function submitSet(count, jobOf) {
  const button = $("submit"), ids = [];
  button.disabled = true;
  try {
    for (let i = 0; i < count; i++) {
      const created = await api("/api/jobs", { json: jobOf(i) });
      state.jobs.set(created.id, created);
      state.watched.add(created.id);
      ids.push(created.id);
    }
  } catch (err) {
    showFormError(ids.length ? `${ids.length} of ${count} jobs were made; then: ${err.message}` : err.message);
  } finally {
    button.disabled = false;
  }
  if (!ids.length) return;
  showSet(ids);
  select(ids[0]);
  refreshGallery();
}

// ---------- a set: the jobs of one Generate with a count, side by side ----------

function showSet(ids) {
  state.set = ids;
  saved.set("vqclip.set", ids ? ids.join(",") : "");
  if (!ids) { $("set").hidden = true; $("set-grid").replaceChildren(); return; }
  renderSet();
}

async function refreshSet() {
  if (!state.set) return;
  try {
    const page = await api(`/api/gallery?ids=${state.set.join(",")}`);
    for (const job of page.jobs) { state.jobs.set(job.id, job); noteStatus(job); }
    const found = new Set(page.jobs.map((job) => job.id));
    const left = state.set.filter((id) => found.has(id));
    if (left.length !== state.set.length) showSet(left.length ? left : null);
    else renderSet();
  } catch (err) { /* the set stays as it was shown */ }
}

function renderSet() {
  const jobs = state.set.map((id) => state.jobs.get(id)).filter(Boolean);
  if (!jobs.length) return; // not fetched yet
  const done = jobs.filter((job) => FINISHED.includes(job.status)).length;
  const seeds = jobs.map((job) => job.seed).filter((seed) => seed != null);
  $("set-title").textContent = `${jobs.length} images` + (seeds.length ? ` · seeds ${seeds[0]} to ${seeds[seeds.length - 1]}` : "") + ` · ${done} of ${jobs.length} finished`;
  const grid = $("set-grid");
  grid.replaceChildren(...jobs.map((job) => {
    const url = job.urls.images[0] || job.urls.preview || job.urls.thumbnail;
    const cell = el("button", { type: "button", class: "set-cell" + (job.id === state.selected ? " selected" : ""), "data-id": job.id, title: `seed ${job.seed}` },
      url ? el("img", { src: `${url}?v=${job.status}-${job.step}`, alt: `seed ${job.seed}` }) : el("span", { class: "placeholder", text: job.status === "queued" ? "waiting…" : "…" }),
      job.status !== "done" ? el("span", { class: `status ${job.status}`, text: job.status }) : null,
      el("span", { class: "seed", text: job.seed ?? "" }));
    if (job.status === "running" && job.iterations) {
      const bar = el("span", { class: "bar" });
      bar.style.width = `${(100 * job.step) / job.iterations}%`;
      cell.append(bar);
    }
    cell.addEventListener("click", () => select(job.id));
    return cell;
  }));
  $("set").hidden = false;
}

function fillForm(job) {
  const s = job.settings;
  $("prompt").value = (s.prompts || []).join("\n");
  if (job.model && state.info.pairs[job.model]) $("model").value = job.model;
  refreshPlaceholders();
  $("width").value = s.size ? s.size[0] : "";
  $("height").value = s.size ? s.size[1] : "";
  $("iterations").value = s.iterations;
  $("seed").value = job.seed ?? "";
  $("cut_method").value = s.cut_method;
  $("video").checked = job.video;
  for (const input of document.querySelectorAll("#advanced-fields [data-option]")) {
    const name = input.dataset.option, value = s[name], d = fieldDefault(name);
    const same = JSON.stringify(value) === JSON.stringify(d);
    if (input.dataset.kind === "bool") input.checked = !!value;
    else if (input.dataset.kind === "toggles") { setToggles(input, value); if (!same) input.dataset.touched = "1"; }
    else if (same || value === null) input.value = "";
    else input.value = Array.isArray(value) ? value.join(" ") : value;
  }
  if ((s.prompts || []).length > 1) showFormError("This job had one prompt per image; each line is one.");
  readPromptSoon();
  $("prompt").focus();
  window.scrollTo({ top: 0, behavior: "smooth" });
}

// ---------- the stage ----------

function select(id) {
  if (state.source) { state.source.close(); state.source = null; }
  state.selected = id;
  state.losses = [];
  for (const node of document.querySelectorAll(".card, .set-cell")) node.classList.toggle("selected", node.dataset.id === id);
  const job = state.jobs.get(id);
  if (job) render(job);
  api(`/api/jobs/${id}`).then((fresh) => {
    if (state.selected !== id) return;
    render(fresh);
    if (!FINISHED.includes(fresh.status)) follow(id);
  }).catch((err) => toast(err.message));
}

function follow(id) {
  const source = new EventSource(`/api/jobs/${id}/events`);
  state.source = source;
  source.addEventListener("job", (e) => { if (state.selected === id) render(JSON.parse(e.data)); });
  source.addEventListener("progress", (e) => {
    if (state.selected !== id) return;
    const p = JSON.parse(e.data);
    if (p.loss != null) state.losses.push([p.step, p.loss]);
    showProgress(p);
  });
  source.addEventListener("preview", (e) => {
    if (state.selected !== id) return;
    const p = JSON.parse(e.data);
    showImage(p.url, `step ${p.step}`);
  });
  source.addEventListener("end", (e) => {
    source.close();
    if (state.source === source) state.source = null;
    const job = JSON.parse(e.data);
    if (state.selected === id && job.status !== "deleted") render(job);
    refreshGallery();
  });
  source.onerror = () => {
    // The browser reconnects by itself; a deleted job answers 404 and stops it.
    if (source.readyState === EventSource.CLOSED && state.source === source) state.source = null;
  };
}

function showImage(url, badge) {
  const img = $("canvas");
  if (img.dataset.url === url) {
    // The same image again (a job selected anew after another's placeholder): show it.
    img.hidden = false; $("empty").hidden = true;
  } else {
    const next = new Image();
    next.onload = () => {
      img.src = url; img.dataset.url = url; img.hidden = false; $("empty").hidden = true;
      img.classList.toggle("small", next.naturalWidth < 200); // show the true pixels
    };
    next.src = url;
  }
  $("canvas-badge").textContent = badge || "";
  $("canvas-badge").hidden = !badge;
}

function showProgress(p) {
  const pct = p.iterations ? (100 * p.step) / p.iterations : 0;
  $("progress").classList.toggle("loading", p.phase === "loading" && !p.step);
  $("progress-bar").style.width = `${pct.toFixed(1)}%`;
  $("job-steps").textContent = p.phase === "loading" && !p.step ? "loading models…" : `step ${p.step} / ${p.iterations}`;
  $("job-rate").textContent = p.it_s ? `${p.it_s.toFixed(p.it_s < 10 ? 2 : 1)} it/s` : "";
  $("job-eta").textContent = p.eta_s != null ? `ETA ${fmtTime(p.eta_s)}` : "";
  document.title = p.phase === "running" && p.iterations && p.step < p.iterations
    ? `${Math.floor(pct)}% · vqclip` : "vqclip";
  $("job-loss").textContent = p.loss != null ? `loss ${p.loss.toFixed(4)}` : "";
  drawSpark();
}

function drawSpark() {
  const canvas = $("spark"), ctx = canvas.getContext("2d");
  const scale = window.devicePixelRatio || 1;
  canvas.width = 160 * scale; canvas.height = 28 * scale;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const pts = state.losses;
  canvas.hidden = pts.length < 2;
  if (pts.length < 2) return;
  const ys = pts.map((p) => p[1]);
  const lo = Math.min(...ys), hi = Math.max(...ys), span = hi - lo || 1;
  const x0 = pts[0][0], xs = pts[pts.length - 1][0] - x0 || 1;
  ctx.strokeStyle = "#9d85ff"; ctx.lineWidth = 1.5 * scale; ctx.beginPath();
  pts.forEach(([x, y], i) => {
    const px = ((x - x0) / xs) * (canvas.width - 2) + 1;
    const py = canvas.height - 2 - ((y - lo) / span) * (canvas.height - 4);
    i ? ctx.lineTo(px, py) : ctx.moveTo(px, py);
  });
  ctx.stroke();
}

function render(job) {
  state.job = job;
  state.jobs.set(job.id, job);
  $("job").hidden = false;
  $("job-prompt").textContent = (job.prompts || []).join(" · ") || "(image prompt)";
  const s = job.settings;
  const took = job.finished && job.started ? ` · ${fmtTime(job.finished - job.started)}` : "";
  $("job-meta").textContent = [job.model, s.size ? `${s.size[0]}×${s.size[1]}` : "",
    `seed ${job.seed}`, job.parent ? `continued from ${job.parent.slice(0, 6)}` : ""]
    .filter(Boolean).join(" · ") + took;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  const image = job.urls.images[0] || job.urls.preview;
  if (image) showImage(`${image}?v=${job.status}-${job.step}`, MADE.includes(job.status) ? "" : `step ${job.step}`);
  else { $("canvas").hidden = true; $("empty").hidden = false; $("canvas-badge").hidden = true; }
  if (job.progress) showProgress(job.progress);
  else {
    document.title = "vqclip";
    showProgress({ step: job.step, iterations: job.iterations, phase: job.status });
    if (job.status === "queued") {
      $("job-steps").textContent = job.position ? `waiting: ${job.position} job${job.position > 1 ? "s" : ""} ahead` : "next in line";
    }
  }
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error || "";
  const finished = FINISHED.includes(job.status);
  $("act-cancel").hidden = finished;
  $("act-cancel").disabled = job.cancel_requested;
  $("act-cancel").textContent = job.cancel_requested ? "Stopping…" : "Cancel";
  $("act-png").hidden = !job.urls.images.length;
  if (job.urls.images.length) $("act-png").href = job.urls.images[0];
  $("act-png").download = `vqclip-${job.id}.png`;
  $("act-video").hidden = !job.urls.video;
  if (job.urls.video) { $("act-video").href = job.urls.video; $("act-video").download = `vqclip-${job.id}.mp4`; }
  $("act-continue-wrap").hidden = !job.can_continue;
  $("act-init").hidden = !job.urls.images.length;
  $("act-cli").hidden = !job.command;
  $("act-delete").hidden = job.status === "running";
  $("act-settings").href = job.urls.settings;
  settingsTable($("settings-table"), job);
  noteStatus(job);
}

function settingsTable(table, job) {
  table.replaceChildren();
  const rows = [["model", job.model || "(by name)"], ...Object.entries({ ...job.settings, seed: job.seed })];
  for (const [k, v] of rows) {
    if (v === null || (Array.isArray(v) && !v.length)) continue;
    table.append(el("tr", {}, el("td", { text: k }), el("td", { text: Array.isArray(v) ? v.join(job.settings.prompts === v ? " · " : " ") : String(v) })));
  }
}

function again(job, changes) {
  const body = { ...job.settings, seed: job.seed, ...changes, video: job.video };
  delete body.device;
  return submit(body);
}

function setupActions() {
  $("set-close").addEventListener("click", () => showSet(null));
  $("act-cancel").addEventListener("click", async () => {
    try { render(await api(`/api/jobs/${state.selected}/cancel`, { method: "POST" })); refreshGallery(); }
    catch (err) { toast(err.message); }
  });
  $("act-rerun").addEventListener("click", () => again(state.job, {}));
  $("act-cli").addEventListener("click", () => copy(state.job.command, "Command copied"));
  $("act-copy-prompt").addEventListener("click", () => copy((state.job.prompts || []).join("\n"), "Prompt copied"));
  $("act-copy-seed").addEventListener("click", () => copy(state.job.seed, "Seed copied"));
  $("act-init").addEventListener("click", async () => {
    try {
      const blob = await (await fetch(state.job.urls.images[0])).blob();
      await useAsInit(blob);
      fillForm(state.job);
      toast("The image is the init image now");
    } catch (err) { toast(err.message); }
  });
  $("act-vary").addEventListener("click", () => again(state.job, { seed: randomSeed() }));
  $("act-edit").addEventListener("click", () => fillForm(state.job));
  $("act-continue").addEventListener("click", async () => {
    try {
      const more = Number($("more").value || 50);
      const child = await api(`/api/jobs/${state.selected}/continue`, { json: { iterations: more, video: state.job.video } });
      state.jobs.set(child.id, child);
      state.watched.add(child.id);
      select(child.id);
      refreshGallery();
    } catch (err) { toast(err.message); }
  });
  $("act-delete").addEventListener("click", async () => {
    if (!confirm("Delete this job and its files?")) return;
    try {
      await api(`/api/jobs/${state.selected}`, { method: "DELETE" });
      state.jobs.delete(state.selected);
      state.selected = null;
      $("job").hidden = true; $("canvas").hidden = true; $("empty").hidden = false; $("canvas-badge").hidden = true;
      refreshGallery();
    } catch (err) { toast(err.message); }
  });
}

// ---------- start ----------

async function start() {
  $("token-form").addEventListener("submit", async (e) => {
    // The token goes in a POST body (never a URL: logs, history); the answer sets a cookie.
    e.preventDefault();
    const answer = await fetch("/session", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: $("token-input").value }) });
    if (answer.ok) location.reload();
    else $("token-error").hidden = false;
  });
  try {
    [state.info, state.fields] = await Promise.all([api("/api/info"), api("/api/options")]);
  } catch (err) {
    toast(err.message);
    return;
  }
  $("devices").textContent = state.info.workers
    ? `${state.info.workers} worker${state.info.workers > 1 ? "s" : ""} · ${[...new Set(state.info.devices)].join(", ")}`
    : "no workers (jobs wait)";
  buildForm();
  setupPromptReading();
  setupActions();
  setupNotify();
  setupGallery();
  const set = (saved.get("vqclip.set") || "").split(",").filter(Boolean);
  if (set.length) showSet(set); // shown once the gallery's refresh has fetched its jobs
  const page = await refreshGallery();
  const jobs = page ? page.jobs : [];
  const live = jobs.find((j) => j.status === "running") || jobs.find((j) => j.status === "queued") || jobs[0];
  if (live) select(live.id);
}

start();
