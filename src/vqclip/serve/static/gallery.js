// The gallery: every job as a card, searched by prompt and filtered by status, refreshed in
// place as jobs change; a selection downloaded as one zip; cancel all queued, delete failed; a
// full-size viewer with the settings beside the image (arrow keys move, Escape closes). Uses
// app.js's helpers.
"use strict";

const gallery = {
  picked: new Set(), // job ids ticked for the zip
  viewing: [], // the jobs the viewer moves through, in the gallery's order
  at: 0,
  loaded: false, // whether a first page has been shown (state.next is then its cursor)
  queue: Promise.resolve(), // the refreshes, one after another
  waiting: null, // a "keep" refresh queued and not yet started: others join it
};
const PAGE = 48; // cards a page adds
const MOST = 500; // the server's largest page

// What a card shows of its job: a card is built again only when this changes.
function cardLook(job) {
  return [job.status, job.step, job.iterations, job.urls.thumbnail, job.urls.preview, job.urls.images.length].join(" ");
}

function viewable(job) {
  return job && (job.urls.images.length > 0 || job.urls.preview);
}

function card(job) {
  const thumbUrl = job.urls.thumbnail || job.urls.preview;
  const pick = el("input", { type: "checkbox", class: "pick", "aria-label": "select for the zip", title: "Select" });
  pick.checked = gallery.picked.has(job.id);
  pick.addEventListener("click", (e) => e.stopPropagation());
  pick.addEventListener("change", () => {
    if (pick.checked) gallery.picked.add(job.id); else gallery.picked.delete(job.id);
    showSelection();
  });
  const expand = viewable(job) ? el("button", { type: "button", class: "expand icon small", title: "View full size", "aria-label": "view full size", text: "⤢" }) : null;
  if (expand) expand.addEventListener("click", (e) => { e.stopPropagation(); openViewer(job.id); });
  const thumb = el("div", { class: "thumb" },
    thumbUrl ? el("img", { src: `${thumbUrl}?v=${job.status}-${job.step}`, alt: "", loading: "lazy" })
      : el("span", { class: "placeholder", text: job.status === "queued" ? "waiting…" : "…" }),
    job.status !== "done" ? el("span", { class: `status ${job.status}`, text: job.status }) : null,
    pick, expand);
  if (job.status === "running" && job.iterations) {
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * job.step) / job.iterations}%`;
    thumb.append(bar);
  }
  const s = job.settings;
  const size = s.size ? `${s.size[0]}×${s.size[1]}` : "";
  const meta = el("div", { class: "meta" },
    el("span", { class: "p", text: (job.prompts || []).join(" · ") || "(image prompt)", title: (job.prompts || []).join("\n") }),
    el("span", { class: "s", text: [job.model, size, `${s.iterations} steps`, `seed ${job.seed}`].filter(Boolean).join(" · ") }));
  const node = el("article", { class: "card" + (job.id === state.selected ? " selected" : "") + (pick.checked ? " picked" : ""), "data-id": job.id, "data-look": cardLook(job) }, thumb, meta);
  node.addEventListener("click", () => select(job.id));
  node.addEventListener("dblclick", () => viewable(job) && openViewer(job.id));
  return node;
}

// The gallery's refreshes, run one at a time so that no answer lands on another's cards:
// "reset": the first page only (a new filter or search);
// "more": the next page, added below;
// "keep" (the default: job events, the running jobs' timer, the page's own changes): every card
//   loaded so far fetched again and the jobs newer than them added on top, so that a refresh while
//   jobs run keeps the pages the user has loaded, and the cards where they were scrolled to.
function refreshGallery(how = "keep") {
  if (how === "keep" && gallery.waiting) return gallery.waiting;
  const run = gallery.queue.then(() => {
    if (gallery.waiting === run) gallery.waiting = null;
    return loadGallery(how);
  });
  if (how === "keep") gallery.waiting = run;
  gallery.queue = run;
  return run;
}

function galleryParams(limit, before) {
  const params = new URLSearchParams({ limit: String(limit) });
  if (state.filter) params.set("status", state.filter);
  const q = $("search").value.trim();
  if (q) params.set("q", q);
  if (before != null) params.set("before", String(before));
  return params;
}

// The jobs from the newest down to the oldest card shown: pages until the cursor of that card
// (state.next), cut after it; where it is gone, down past where it was. Everything when
// everything was shown (state.next null).
async function fetchShown() {
  const box = $("gallery");
  const until = state.next, oldest = box.lastElementChild?.dataset.id;
  const jobs = [];
  let page, before = null;
  let limit = Math.min(MOST, Math.max(PAGE, box.children.length + 8)); // a few new ones too
  do {
    page = await api(`/api/gallery?${galleryParams(limit, before)}`);
    jobs.push(...page.jobs);
    before = page.next;
    limit = PAGE;
  } while (before != null && (until == null || before > until));
  const cut = until == null ? -1 : jobs.findIndex((job) => job.id === oldest);
  if (cut >= 0) { jobs.length = cut + 1; before = until; }
  return { jobs, counts: page.counts, next: before };
}

// The cards of `jobs` in their order: a card whose job looks the same is kept as it is (no
// image loads again), a changed one is built again, the cards of jobs not among them go.
function placeCards(jobs) {
  const box = $("gallery");
  const old = new Map([...box.children].map((node) => [node.dataset.id, node]));
  const nodes = jobs.map((job) => {
    const node = old.get(job.id);
    old.delete(job.id);
    return node && node.dataset.look === cardLook(job) ? node : card(job);
  });
  const keep = new Set(nodes);
  for (const node of [...box.children]) if (!keep.has(node)) node.remove();
  nodes.forEach((node, i) => {
    if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
  });
}

async function loadGallery(how) {
  if (how === "more" && state.next == null) return;
  if (how === "keep" && !gallery.loaded) how = "reset";
  try {
    let page;
    if (how === "keep") page = await fetchShown();
    else page = await api(`/api/gallery?${galleryParams(PAGE, how === "more" ? state.next : null)}`);
    const box = $("gallery");
    if (how === "more") {
      const shown = new Set([...box.children].map((node) => node.dataset.id));
      for (const job of page.jobs) if (!shown.has(job.id)) box.append(card(job));
    } else {
      placeCards(page.jobs);
    }
    for (const job of page.jobs) { state.jobs.set(job.id, job); noteStatus(job); }
    gallery.loaded = true;
    state.next = page.next;
    $("more-jobs").hidden = page.next == null;
    const q = $("search").value.trim();
    $("gallery-empty").textContent = q ? `No job's prompt has “${q}”.` : "No jobs yet.";
    $("gallery-empty").hidden = box.children.length > 0;
    showCounts(page.counts);
    showSelection();
    refreshSet();
    return page;
  } catch (err) { toast(err.message); }
}

function showCounts(counts) {
  const chips = $("queue-chips");
  chips.replaceChildren(
    el("span", { class: "chip running" }, el("b", { text: String(counts.running) }), " running"),
    el("span", { class: "chip queued" }, el("b", { text: String(counts.queued) }), " queued"),
    el("span", { class: "chip" }, el("b", { text: String(counts.done) }), " done"));
  $("cancel-queued").hidden = !counts.queued;
  $("cancel-queued").textContent = `Cancel all queued (${counts.queued})`;
  $("delete-failed").hidden = !counts.failed;
  $("delete-failed").textContent = `Delete failed (${counts.failed})`;
}

// ---------- the selection: one zip ----------

function pickedFinished() {
  return [...gallery.picked].filter((id) => MADE.includes(state.jobs.get(id)?.status));
}

function showSelection() {
  const ids = [...gallery.picked];
  const finished = pickedFinished().length;
  $("selection").hidden = ids.length === 0;
  $("selection-count").textContent = `${ids.length} selected · ${finished} finished`;
  $("zip").hidden = finished === 0;
  for (const node of document.querySelectorAll("#gallery .card")) {
    const on = gallery.picked.has(node.dataset.id);
    node.classList.toggle("picked", on);
    node.querySelector(".pick").checked = on;
  }
}

// The zip of the selection's finished jobs: their ids go in a POST's body (a query string
// holds some 200), and the answer is saved under the name the server gives it.
async function downloadZip() {
  const ids = pickedFinished();
  if (!ids.length) return;
  const button = $("zip");
  button.disabled = true;
  toast(`Making a zip of ${ids.length} job${ids.length === 1 ? "" : "s"}…`);
  try {
    const response = await fetch("/api/gallery/zip", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids }) });
    if (response.status === 401) {
      $("token-dialog").showModal();
      throw new Error("this server needs its token");
    }
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(typeof body.detail === "string" ? body.detail : `HTTP ${response.status}`);
    }
    const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
    const url = URL.createObjectURL(await response.blob());
    const link = el("a", { href: url, download: named ? named[1] : "vqclip-images.zip", class: "offscreen" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    $("toast").hidden = true;
  } catch (err) {
    toast(err.message);
  } finally {
    button.disabled = false;
  }
}

async function bulk(path, question, answer) {
  if (!confirm(question)) return;
  try {
    const result = await api(path, { method: "POST" });
    toast(answer(result));
    refreshGallery();
  } catch (err) { toast(err.message); }
}

// ---------- the viewer ----------

function openViewer(id) {
  const shown = [...document.querySelectorAll("#gallery .card")].map((c) => state.jobs.get(c.dataset.id));
  gallery.viewing = shown.filter(viewable);
  let at = gallery.viewing.findIndex((job) => job.id === id);
  if (at < 0) { gallery.viewing = [state.jobs.get(id)].filter(viewable); at = 0; }
  if (!gallery.viewing.length) return;
  showInViewer(at);
  if (!$("viewer").open) $("viewer").showModal();
}

function showInViewer(at) {
  const list = gallery.viewing;
  gallery.at = Math.max(0, Math.min(at, list.length - 1));
  const job = list[gallery.at];
  const image = job.urls.images[0] || job.urls.preview;
  $("viewer-img").src = `${image}?v=${job.status}-${job.step}`;
  $("viewer-img").dataset.id = job.id;
  $("viewer-pos").textContent = `${gallery.at + 1} / ${list.length}`;
  $("viewer-prompt").textContent = (job.prompts || []).join(" · ") || "(image prompt)";
  const s = job.settings;
  $("viewer-meta").textContent = [job.status, job.model, s.size ? `${s.size[0]}×${s.size[1]}` : "", `seed ${job.seed}`].filter(Boolean).join(" · ");
  $("viewer-png").hidden = !job.urls.images.length;
  $("viewer-png").href = job.urls.images[0] || "";
  $("viewer-png").download = `vqclip-${job.id}.png`;
  $("viewer-prev").disabled = gallery.at === 0;
  $("viewer-next").disabled = gallery.at === list.length - 1;
  settingsTable($("viewer-settings"), job);
}

function setupViewer() {
  const viewer = $("viewer");
  // On the document: a button disabled at the first or last image drops the focus.
  document.addEventListener("keydown", (e) => {
    if (!viewer.open) return;
    if (e.key === "ArrowRight") { e.preventDefault(); showInViewer(gallery.at + 1); }
    else if (e.key === "ArrowLeft") { e.preventDefault(); showInViewer(gallery.at - 1); }
    else if (e.key === "Escape") { e.preventDefault(); viewer.close(); }
  });
  viewer.addEventListener("click", (e) => { if (e.target === viewer) viewer.close(); }); // the backdrop
  $("viewer-prev").addEventListener("click", () => showInViewer(gallery.at - 1));
  $("viewer-next").addEventListener("click", () => showInViewer(gallery.at + 1));
  $("viewer-close").addEventListener("click", () => viewer.close());
  $("viewer-open").addEventListener("click", () => { viewer.close(); select(gallery.viewing[gallery.at].id); });
  $("canvas").addEventListener("click", () => state.selected && openViewer(state.selected));
}

// ---------- setup ----------

function setupGallery() {
  for (const b of $("filters").children) {
    b.addEventListener("click", () => {
      for (const x of $("filters").children) x.classList.toggle("on", x === b);
      state.filter = b.dataset.status;
      refreshGallery("reset");
    });
  }
  let typing = null;
  $("search").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => refreshGallery("reset"), 250); });
  $("more-jobs").addEventListener("click", () => refreshGallery("more"));
  $("zip").addEventListener("click", downloadZip);
  $("select-shown").addEventListener("click", () => {
    for (const node of document.querySelectorAll("#gallery .card")) gallery.picked.add(node.dataset.id);
    showSelection();
  });
  $("select-clear").addEventListener("click", () => { gallery.picked.clear(); showSelection(); });
  $("cancel-queued").addEventListener("click", () => bulk("/api/gallery/cancel-queued",
    "Cancel every queued job? Running jobs go on.", (r) => `Cancelled ${r.cancelled} queued job${r.cancelled === 1 ? "" : "s"}`));
  $("delete-failed").addEventListener("click", () => bulk("/api/gallery/delete-failed",
    "Delete every failed job and its files?", (r) => `Deleted ${r.deleted} failed job${r.deleted === 1 ? "" : "s"}`));
  setupViewer();
  let pending = null;
  const source = new EventSource("/api/events");
  source.addEventListener("jobs", (e) => {
    showCounts(JSON.parse(e.data).counts);
    clearTimeout(pending);
    pending = setTimeout(() => refreshGallery(), 400);
  });
  // Cards of running jobs refresh their progress bar now and then.
  setInterval(() => {
    if ([...state.jobs.values()].some((j) => j.status === "running")) refreshGallery();
  }, 5000);
}
