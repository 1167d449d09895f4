// qdrant-xai explorer: plain DOM, no framework, no network beyond this server.
// Every value from the collection (captions, file names, payloads, words) is set with
// textContent or as an attribute value, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { last: null, query: null, file: null, hovered: null };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

async function api(url, init) {
  const response = await fetch(url, init);
  const body = await response.json();
  if (!response.ok) {
    const error = body.error || { type: "Error", message: response.statusText };
    throw new Error(`${error.type}: ${error.message}`);
  }
  return body;
}

function options() {
  return {
    explain: "true",
    pictures: "true",
    limit: $("limit").value || "8",
    method: $("heatmap-method").value,
    word_method: $("word-method").value,
    grounding: $("grounding").checked ? "true" : "false",
    rationales: $("rationales").checked ? "true" : "false",
  };
}

async function searchText(text) {
  state.query = text; state.file = null;
  const params = new URLSearchParams({ q: text, ...options() });
  await run(() => api(`/api/search?${params}`));
}

async function searchImage(file) {
  state.query = null; state.file = file;
  const form = new FormData();
  form.append("image", file);
  for (const [key, value] of Object.entries(options())) form.append(key, value);
  await run(() => api("/api/search", { method: "POST", body: form }));
}

async function run(request) {
  setStatus("searching…");
  const started = performance.now();
  try {
    const answer = await request();
    state.last = answer;
    render(answer);
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    const failed = answer.hits.filter((h) => h.status === "failed").length;
    setStatus(`${answer.hits.length} hits in ${seconds} s` +
      (failed ? ` · ${failed} could not be explained (each says why)` : ""));
  } catch (error) {
    setStatus(String(error.message || error), true);
  }
}

function label(hit) {
  const payload = hit.payload || {};
  if (typeof payload.text === "string" && payload.text) return payload.text;
  const source = payload.source || hit.image_source || "";
  if (typeof source === "string" && source && !source.startsWith("data:")) {
    return source.split(/[\\/]/).pop();
  }
  return hit.text || "";
}

// the words of a text as spans shaded by their scores (orange raises, blue lowers)
function wordsNode(text, words, hoverable) {
  const node = el("span", { class: "words" });
  const scale = Math.max(1e-9, ...words.map((w) => Math.abs(w[1])));
  let cursor = 0;
  for (const [word, score, [start, end]] of [...words].sort((a, b) => a[2][0] - b[2][0])) {
    node.append(text.slice(cursor, start));
    const strength = Math.min(1, Math.abs(score) / scale).toFixed(2);
    const rgb = score >= 0 ? "255,140,0" : "60,120,255";
    const span = el("span", {
      class: "w", title: `${score >= 0 ? "+" : ""}${score.toFixed(4)}`,
      "data-word": word, style: { background: `rgba(${rgb},${strength})` },
    });
    span.textContent = text.slice(start, end);
    if (hoverable) {
      span.addEventListener("mouseenter", () => hover(word, span));
      span.addEventListener("mouseleave", () => hover(null, span));
    }
    node.append(span);
    cursor = end;
  }
  node.append(text.slice(cursor));
  return node;
}

function pictureBox(picture, which) {
  const box = el("div", { class: "box", "data-side": which });
  if (!picture) return box;
  if (picture.error) {
    box.append(el("span", { class: "badge", text: `no picture: ${picture.error.message}` }));
    return box;
  }
  const side = 234;
  const scale = Math.min(side / picture.width, side / picture.height);
  const width = picture.width * scale, height = picture.height * scale;
  const left = (side - width) / 2, top = (side - height) / 2;
  box.append(el("img", {
    class: "photo", src: picture.image, alt: which,
    style: { left: `${left}px`, top: `${top}px`, width: `${width}px`, height: `${height}px` },
  }));
  const [x0, y0, x1, y1] = picture.crop || [0, 0, 1, 1];
  const crop = el("div", {
    class: "crop",
    style: {
      left: `${left + x0 * width}px`, top: `${top + y0 * height}px`,
      width: `${(x1 - x0) * width}px`, height: `${(y1 - y0) * height}px`,
    },
  });
  if (picture.heatmap) {
    crop.append(el("img", { class: "layer heatmap", src: picture.heatmap, alt: "heatmap" }));
  }
  for (const g of picture.grounding || []) {
    if (g.layer) {
      crop.append(el("img", {
        class: "layer grounding", src: g.layer, alt: `where "${g.word}" is`,
        "data-word": g.word, "data-strength": String(g.strength), hidden: "",
      }));
    }
  }
  box.append(crop);
  return box;
}

function render(answer) {
  const hits = $("hits"), words = $("query-words"), queryImage = $("query-image");
  hits.replaceChildren(); words.replaceChildren(); queryImage.replaceChildren();
  const first = answer.hits.find((h) => h.words_side === "query" && h.text);
  if (first) {
    words.append(el("span", { class: "meta", text: "query words (hover one): " }),
      wordsNode(first.text, first.words, true));
  }
  if (state.file) {
    queryImage.append(el("span", { class: "meta", text: "query image: " }),
      el("img", { src: URL.createObjectURL(state.file), alt: "query image" }));
  }
  answer.hits.forEach((hit, index) => hits.append(card(hit, index)));
}

function card(hit, index) {
  const node = el("article", { class: "hit", tabindex: "0", "data-id": String(hit.id) });
  const whose = hit.heatmap_side === "query" ? "(query)" : "(hit)";
  node.append(el("div", { class: "head" },
    el("span", { text: `#${index + 1}` }),
    el("span", { class: "score", text: `score ${hit.score.toFixed(4)}` })));
  if (hit.status === "failed") {
    node.append(el("div", { class: "label", text: label(hit) }),
      el("div", { class: "failed", text: `not explained (${hit.error.type}): ${hit.error.message}` }));
    return node;
  }
  if (hit.heatmap) node.append(pictureBox(hit.picture, whose));
  if (hit.words_side === "hit" && hit.text) {
    node.append(el("div", { class: "label" }, wordsNode(hit.text, hit.words, false)));
  } else {
    node.append(el("div", { class: "label", text: label(hit) }));
  }
  node.append(el("div", { class: "meta", text: `heatmap ${whose}: ${hit.heatmap_method || "-"}` }));
  node.addEventListener("click", () => detail(hit, index));
  node.addEventListener("keydown", (event) => { if (event.key === "Enter") detail(hit, index); });
  return node;
}

// hovering a query word shows its grounding map on every hit instead of the heatmap
function hover(word, span) {
  state.hovered = word;
  document.querySelectorAll("#query-words .w").forEach((w) => w.classList.toggle("active", w === span && word !== null));
  for (const box of document.querySelectorAll("#hits .box")) {
    const layers = [...box.querySelectorAll(".layer.grounding")];
    const match = layers.find((l) => l.dataset.word === word);
    layers.forEach((l) => { l.hidden = l !== match; });
    const heat = box.querySelector(".layer.heatmap");
    if (heat) heat.hidden = word !== null;
    box.querySelectorAll(".badge.found").forEach((b) => b.remove());
    if (word === null) continue;
    const text = match ? `"${word}" · ${Math.round(100 * Number(match.dataset.strength))} %` : `"${word}" not found`;
    box.append(el("span", {
      class: "badge found", text,
      title: "the word's map at its peak, as a share of this hit's strongest word map",
    }));
  }
}

function detail(hit, index) {
  const body = $("detail-body");
  body.replaceChildren(el("h2", { text: `#${index + 1} · score ${hit.score.toFixed(4)}` }));
  if (hit.heatmap_side === "hit" && state.query) {
    const params = new URLSearchParams({ query: state.query, method: hit.heatmap_method, size: "640" });
    if (state.last && state.last.collection) params.set("collection", state.last.collection);
    body.append(el("img", {
      class: "full", alt: "heatmap over the hit, full size",
      src: `/api/points/${encodeURIComponent(String(hit.id))}/overlay.png?${params}`,
    }));
  } else if (hit.picture && !hit.picture.error) {
    body.append(pictureBox(hit.picture, "(query)"));
  }
  if (hit.text) {
    const whose = hit.words_side === "query" ? "query words" : "words of the hit's text";
    body.append(el("h3", { text: `${whose} (${hit.word_method})` }), wordsNode(hit.text, hit.words, false));
  }
  if (hit.rationales === null || hit.rationales === undefined) {
    body.append(el("p", { class: "meta", text: "rationales: not asked for (tick “rationales”)" }));
  } else if (hit.rationales.length === 0) {
    body.append(el("p", { class: "why", text: "no rationale found" }));
  } else {
    const why = el("p", { class: "why", text: "matched because there is: " });
    hit.rationales.forEach((r, i) => {
      if (i) why.append(", ");
      why.append(el("b", { text: r.concept, title: `gain ${r.gain.toFixed(4)}, support ${r.support}` }));
    });
    body.append(why);
  }
  if (hit.hit_kind === "image") {
    const captions = el("div", { class: "captions" }, el("p", { class: "meta", text: "reading its captions…" }));
    body.append(el("h3", { text: "its captions, each word scored against this image" }), captions);
    captionsOf(hit, captions);
  }
  const table = el("table", { class: "payload" });
  for (const [key, value] of Object.entries(hit.payload || {})) {
    let shown = typeof value === "string" ? value : JSON.stringify(value);
    if (shown.length > 300) shown = shown.slice(0, 299) + "…";
    table.append(el("tr", {}, el("td", { text: key }), el("td", { text: shown })));
  }
  body.append(el("h3", { text: "payload" }), table,
    el("p", { class: "meta", text: `id ${hit.id} · heatmap ${hit.heatmap_method || "-"} · words ${hit.word_method || "-"}` }));
  $("detail").showModal();
}

async function captionsOf(hit, into) {
  const params = new URLSearchParams({ method: $("heatmap-method").value, word_method: $("word-method").value });
  if (state.last && state.last.collection) params.set("collection", state.last.collection);
  try {
    const answer = await api(`/api/points/${encodeURIComponent(String(hit.id))}/captions?${params}`);
    into.replaceChildren();
    if (!answer.captions.length) into.append(el("p", { class: "meta", text: "no caption stored with this image" }));
    for (const caption of answer.captions) {
      const e = caption.explanation;
      into.append(e.status === "ok"
        ? el("p", { class: "caption" }, wordsNode(caption.text, e.words, false),
          el("span", { class: "meta", text: ` (score ${e.score.toFixed(4)})` }))
        : el("p", { class: "failed", text: `${caption.text}: not explained (${e.error.type}): ${e.error.message}` }));
    }
  } catch (error) {
    into.replaceChildren(el("p", { class: "failed", text: String(error.message || error) }));
  }
}

async function init() {
  const info = await api("/api/info");
  $("model").textContent = info.model;
  $("collection").textContent = info.collection;
  for (const [id, names, chosen] of [
    ["heatmap-method", info.heatmap_methods, info.defaults.heatmap_method],
    ["word-method", info.word_methods, info.defaults.word_method],
  ]) {
    const select = $(id);
    for (const name of names) select.append(el("option", { value: name, text: name }));
    select.value = chosen;
    select.addEventListener("change", () => again());
  }
  $("rationales").checked = info.defaults.rationales;
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("q").value.trim();
    if (text) searchText(text);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault(); drop.classList.remove("over");
    const file = event.dataTransfer.files[0];
    if (file) searchImage(file);
  });
  $("file").addEventListener("change", () => { if ($("file").files[0]) searchImage($("file").files[0]); });
  $("close").addEventListener("click", () => $("detail").close());
}

function again() {
  if (state.file) searchImage(state.file);
  else if (state.query) searchText(state.query);
}

init().catch((error) => setStatus(String(error.message || error), true));
