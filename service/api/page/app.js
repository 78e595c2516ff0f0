// The page: upload or pick a video, pick a model, ask queries, see moments / saliency / highlights / summary,
// render a highlight reel. All state lives here; api.js talks to the API, plot.js draws the time axis.

import * as api from "./api.js";
import { TimePlot } from "./plot.js";

const $ = (id) => document.getElementById(id);
const player = $("player");
const state = { model: "", video: null, results: [], segments: [], polling: 0 };

const plot = new TimePlot($("plot"), { onSeek: seek, onHover: showHover, onUnhover: () => { $("hover-card").hidden = true; } });

// ------------------------------------------------------------------------------------------------ errors, key

api.onError((err) => {
  $("error-code").textContent = err.code;
  $("error-message").textContent = err.message;
  $("error").hidden = false;
  if (err.status === 401) $("key-box").hidden = false;
});
$("error-close").onclick = () => { $("error").hidden = true; };

if (api.getKey()) { $("key-box").hidden = false; $("api-key").value = api.getKey(); }
function applyKey() {
  if ($("api-key").value.trim() === api.getKey()) return;
  api.setKey($("api-key").value);
  $("error").hidden = true;
  start();
}
$("api-key").addEventListener("change", applyKey);
$("key-box").addEventListener("submit", (e) => { e.preventDefault(); applyKey(); });

// ------------------------------------------------------------------------------------------------ models

async function loadModels() {
  const { models } = await api.get("/v1/models");
  const select = $("model");
  select.replaceChildren(...models.map((m) => {
    const option = new Option(`${m.name}${m.outputs === "saliency" ? " (highlights)" : ""}`, m.name);
    option.title = [m.dataset, m.clip, m.loaded ? "loaded" : "not loaded"].filter(Boolean).join(" · ");
    return option;
  }));
  const chosen = models.find((m) => m.name === state.model) || models.find((m) => m.default) || models[0];
  if (chosen) select.value = state.model = chosen.name;
}

$("model").addEventListener("change", () => {
  state.model = $("model").value;
  clearAnswers();
  if (state.video) selectVideo(state.video.video_id);
});

// ------------------------------------------------------------------------------------------------ videos

let nextCursor = null;

async function loadVideos(more = false) {
  const query = new URLSearchParams({ limit: "20" });
  if (more && nextCursor) query.set("page_token", nextCursor);
  const page = await api.get(`/v1/videos?${query}`);
  nextCursor = page.next_page_token || null;
  $("more").hidden = !nextCursor;
  const items = page.videos.map((v) => {
    const li = document.createElement("li");
    li.className = "video-item";
    li.dataset.id = v.video_id;
    const status = statusFor(v);
    li.innerHTML = `<code></code><span class="badge"></span><small class="muted"></small>`;
    li.querySelector("code").textContent = v.video_id.slice(0, 10);
    li.querySelector(".badge").textContent = status;
    li.querySelector(".badge").classList.add(status);
    li.querySelector("small").textContent = [v.duration ? `${v.duration.toFixed(1)} s` : "",
      v.size_bytes ? size(v.size_bytes) : ""].filter(Boolean).join(" · ");
    li.onclick = () => selectVideo(v.video_id);
    if (state.video && state.video.video_id === v.video_id) li.classList.add("selected");
    return li;
  });
  if (more) $("videos").append(...items); else $("videos").replaceChildren(...items);
}

// A listed video's status for the chosen model (the API names one per model it was encoded for).
function statusFor(v) {
  if (!v.models || !Object.keys(v.models).length) return v.status;
  const mine = v.models[state.model];
  return mine ? mine.status : "not encoded";
}

$("refresh").onclick = () => loadVideos();
$("more").onclick = () => loadVideos(true);

async function selectVideo(id) {
  clearAnswers();
  document.querySelectorAll(".video-item").forEach((li) => li.classList.toggle("selected", li.dataset.id === id));
  const status = await api.get(`/v1/videos/${id}?model=${encodeURIComponent(state.model)}`);
  if (player.dataset.video !== id) {  // the same video for another model: keep the player where it is
    player.dataset.video = id;
    player.src = api.mediaUrl(status.content || `/v1/videos/${id}/content`);
  }
  showStatus(status);
  if (["queued", "processing"].includes(state.video.status)) await pollStatus(id);
}

// The video's status for the chosen model: its entry in ``models`` (the top-level fields describe ``v.model``).
function forModel(v) {
  const mine = v.models && v.models[state.model];
  if (mine) return { ...v, ...mine, model: state.model };
  if (v.model === state.model) return v;
  return { ...v, model: state.model, status: "not encoded", progress: 0, num_clips: null, error: null };
}

function showStatus(raw) {
  const v = forModel(raw);
  state.video = v;
  const bits = [`${v.video_id.slice(0, 12)}…`, v.model, v.status];
  if (v.status === "processing" || v.status === "queued") bits.push(`${Math.round(100 * v.progress)}% encoded`);
  if (v.duration) bits.push(`${v.duration.toFixed(1)} s`);
  if (v.num_clips) bits.push(`${v.num_clips} clips of ${v.clip_seconds} s`);
  if (v.error) bits.push(`${v.error.code}: ${v.error.message}`);
  if (v.status === "not encoded") bits.push("drop the file again with this model chosen to encode it for it");
  $("video-info").textContent = bits.join(" · ");
  const ready = v.status === "ready";
  ["ask", "summarize"].forEach((b) => { $(b).disabled = !ready; });
  $("render").disabled = !ready || !state.segments.length;
}

// Encoding progress, from the status route, until the video is ready or failed.
async function pollStatus(id) {
  const token = ++state.polling;
  for (;;) {
    const v = await api.get(`/v1/videos/${id}?model=${encodeURIComponent(state.model)}`);
    if (token !== state.polling) return;
    showStatus(v);
    const { status, progress } = state.video;
    setBar("upload-bar", status === "ready" ? 1 : progress, "encoding");
    $("upload-status").textContent = status === "ready" ? "ready" : `${status} ${Math.round(100 * progress)}%`;
    if (!["queued", "processing"].includes(status)) {
      loadVideos().catch(() => {});
      return;
    }
    await new Promise((done) => setTimeout(done, 500));
  }
}

function setBar(id, share, kind) {
  const bar = $(id);
  bar.style.width = `${Math.round(100 * Math.max(0, Math.min(1, share)))}%`;
  bar.dataset.kind = kind;
}

// ------------------------------------------------------------------------------------------------ upload

const drop = $("drop");
drop.onclick = () => $("file").click();
drop.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); };
$("file").onchange = () => { if ($("file").files[0]) uploadFile($("file").files[0]); };
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) uploadFile(e.dataTransfer.files[0]);
});

async function uploadFile(file) {
  $("upload-status").textContent = `uploading ${file.name}`;
  setBar("upload-bar", 0, "upload");
  let status;
  try {
    status = await api.upload(file, state.model, (share) => {
      setBar("upload-bar", share, "upload");
      $("upload-status").textContent = `uploading ${file.name}: ${Math.round(100 * share)}%`;
    });
  } catch {
    $("upload-status").textContent = "upload failed";
    return;
  }
  await loadVideos().catch(() => {});
  await selectVideo(status.video_id);
}

// ------------------------------------------------------------------------------------------------ answers

function clearAnswers() {
  state.results = [];
  state.segments = [];
  plot.clear();
  $("moments").replaceChildren();
  $("highlights").replaceChildren();
  $("segments").replaceChildren();
  $("reel").hidden = true;
  $("reel").removeAttribute("src");
  $("reel-status").textContent = "";
  $("render").disabled = true;
}

function queries() {
  return $("queries").value.split("\n").map((q) => q.trim()).filter(Boolean);
}

const videoPath = (suffix) => `/v1/videos/${state.video.video_id}/${suffix}`;
const waiting = (el) => (pending) => { el.textContent = pending.message; };

$("query-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const asked = queries();
  const highlightOnly = $("model").selectedOptions[0]?.textContent.includes("(highlights)");
  if (!asked.length && !highlightOnly) {
    $("ask-status").textContent = "type a query first";
    return;
  }
  $("ask").disabled = true;
  $("ask-status").textContent = "asking…";
  try {
    if (highlightOnly) {
      await showHighlights(asked[0]);
    } else {
      const out = await api.answer(videoPath("moments"), { queries: asked, model: state.model,
        top_k: Number($("top-k").value) || 5 }, waiting($("ask-status")));
      state.results = out.results;
      state.segments = [];
      plot.show(state.video.duration || out.results[0].duration, out.results);
      showMoments(out.results);
      await showHighlights(asked[0]);
    }
    $("ask-status").textContent = "";
  } catch {
    $("ask-status").textContent = "";
  } finally {
    $("ask").disabled = false;
  }
});

function thumbnail(item, seconds) {
  if (item && item.thumbnail) return item.thumbnail;
  const clipSeconds = state.video.clip_seconds || (state.results[0] && state.results[0].clip_seconds) || 1;
  const last = Math.max(0, (state.video.num_clips || 1) - 1);
  return thumbnailPath(Math.min(last, Math.floor(seconds / clipSeconds + 1e-6)));
}

function setImage(img, path) {
  img.onerror = () => { img.alt = "no thumbnail"; };
  img.src = api.mediaUrl(path);
}

const thumbnailPath = (clip) => videoPath(`thumbnails/${clip}?model=${encodeURIComponent(state.model)}`);
const size = (n) => (n < 1e6 ? `${Math.max(1, Math.round(n / 1e3))} kB` : `${(n / 1e6).toFixed(1)} MB`);
const fmt = (s) => `${s.toFixed(1)}`;

function showMoments(results) {
  const items = [];
  results.forEach((r, qi) => r.moments.forEach((m, mi) => {
    const li = document.createElement("li");
    li.className = "moment";
    li.dataset.start = m.start;
    li.dataset.query = qi;
    li.innerHTML = `<img alt=""><div><span class="score"></span><b></b><small class="muted"></small></div>`;
    setImage(li.querySelector("img"), thumbnail(m, m.start));
    li.querySelector("b").textContent = `${fmt(m.start)} – ${fmt(m.end)} s`;
    li.querySelector(".score").textContent = m.score.toFixed(3);
    li.querySelector("small").textContent = `#${mi + 1} for “${r.query}”`;
    li.style.setProperty("--q", qi);
    li.onclick = () => seek(m.start);
    items.push(li);
  }));
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "no moments (saliency-only model or all below min score)";
    items.push(li);
  }
  $("moments").replaceChildren(...items);
}

async function showHighlights(query) {
  const body = { model: state.model, top_k: 8 };
  if (query) body.query = query;
  const out = await api.answer(videoPath("highlights"), body, waiting($("ask-status")));
  if (!state.results.length) {  // a saliency-only model: the curve comes from here
    state.results = [{ query: out.query, moments: [], saliency: out.saliency, clip_seconds: out.clip_seconds,
                       duration: out.duration }];
    plot.show(state.video.duration || out.duration, state.results);
  }
  $("highlights").replaceChildren(...out.highlights.map((h) => {
    const card = document.createElement("button");
    card.className = "highlight";
    card.innerHTML = `<img alt=""><span></span>`;
    setImage(card.querySelector("img"), thumbnail(h, h.start));
    card.querySelector("span").textContent = `${fmt(h.start)} s · ${h.score.toFixed(2)}`;
    card.onclick = () => seek(h.start);
    return card;
  }));
}

$("budget").addEventListener("input", () => { $("budget-value").textContent = `${Math.round(100 * $("budget").value)}%`; });
$("budget").addEventListener("change", () => { if (state.segments.length) summarize(); });
$("summarize").onclick = () => summarize();

function summaryBody(extra = {}) {
  const body = { model: state.model, budget: Number($("budget").value), ...extra };
  const first = queries()[0];
  if (first) body.query = first;
  return body;
}

async function summarize() {
  $("summarize").disabled = true;
  try {
    const out = await api.answer(videoPath("summary"), summaryBody(), waiting($("reel-status")));
    state.segments = out.segments;
    $("reel").hidden = true;  // a reel of the previous summary is stale now
    $("reel").removeAttribute("src");
    if (state.results.length) plot.setSegments(out.segments);
    else plot.show(state.video.duration || out.duration, [], out.segments);
    const total = out.segments.reduce((sum, s) => sum + (s.end - s.start), 0);
    $("segments").replaceChildren(...out.segments.map((s) => {
      const li = document.createElement("li");
      li.className = "segment";
      li.textContent = `${fmt(s.start)} – ${fmt(s.end)} s · ${s.score.toFixed(3)}`;
      li.onclick = () => seek(s.start);
      return li;
    }));
    $("reel-status").textContent = `${out.segments.length} segments, ${fmt(total)} s of ${fmt(out.duration)} s`;
    $("render").disabled = !out.segments.length;
  } catch {
    $("reel-status").textContent = "";
  } finally {
    $("summarize").disabled = false;
  }
}

// ------------------------------------------------------------------------------------------------ reel

$("render").onclick = async () => {
  $("render").disabled = true;
  $("reel-status").textContent = "rendering the reel…";
  try {
    const out = await api.answer(videoPath("summary"), summaryBody({ render: true }), waiting($("reel-status")));
    const reel = $("reel");
    reel.src = api.mediaUrl(out.reel.url);
    reel.hidden = false;
    $("reel-status").textContent = `reel: ${out.segments.length} segments, ${fmt(out.reel.duration)} s, `
      + size(out.reel.size_bytes);
    await reel.play().catch(() => {});
  } catch {
    $("reel-status").textContent = "";
  } finally {
    $("render").disabled = false;
  }
};

// ------------------------------------------------------------------------------------------------ player

// Seek paused, then play: playback starts exactly at the moment's start.
function seek(seconds) {
  player.pause();
  player.addEventListener("seeked", () => player.play().catch(() => {}), { once: true });
  player.currentTime = seconds;
}

// The cursor follows the player at about 20 updates a second (a relayout per frame is wasted work).
let lastMove = 0;
function followPlayer(now) {
  if (now - lastMove > 50) {
    lastMove = now;
    plot.moveCursor(player.currentTime);
  }
  if (!player.paused) requestAnimationFrame(followPlayer);
}
player.addEventListener("play", () => requestAnimationFrame(followPlayer));
player.addEventListener("seeked", () => plot.moveCursor(player.currentTime));
player.addEventListener("timeupdate", () => plot.moveCursor(player.currentTime));

function showHover(query, clip, value, event) {
  const r = state.results[query];
  const card = $("hover-card");
  const start = clip * r.clip_seconds;
  const end = Math.min(start + r.clip_seconds, r.duration);
  card.querySelector("span").textContent = `clip ${clip} · ${fmt(start)}–${fmt(end)} s · saliency ${value.toFixed(3)}`;
  setImage(card.querySelector("img"), thumbnailPath(clip));
  const box = $("stage").getBoundingClientRect();
  card.style.left = `${Math.min(event.clientX - box.left + 12, box.width - 200)}px`;
  card.style.top = `${event.clientY - box.top + 12}px`;
  card.hidden = false;
}

// ------------------------------------------------------------------------------------------------ start

async function start() {
  try {
    await loadModels();
    await loadVideos();
  } catch { /* shown by the error banner */ }
}

start();
