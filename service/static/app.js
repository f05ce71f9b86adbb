// The search page: send the selfies (up to 5, kept in this page's memory as Blobs until the
// person searches) to /api/search, draw the photos found with the face boxed, a close-up of that
// face, how sure each match is and where the photo comes from; then let the person tick the
// photos of them ("This is me") to search again with them (sent as `confirmed` match ids) or to
// ask for their removal (/api/removals), with a letter per dataset to send its maintainer.
"use strict";

const form = document.getElementById("search-form");
const pickers = [document.getElementById("camera"), document.getElementById("file")];
const selfiesList = document.getElementById("selfies");
const pickersHelp = document.getElementById("pickers-help");
const confirmPanel = document.getElementById("confirm-panel");
const confirmSearch = document.getElementById("confirm-search");
const pickersText = pickersHelp.textContent;
const threshold = document.getElementById("threshold");
const thresholdValue = document.getElementById("threshold-value");
const thresholdGuide = document.getElementById("threshold-guide");
const again = document.getElementById("again");
const statusLine = document.getElementById("status");
const errorBox = document.getElementById("error");
const results = document.getElementById("results");
const resultsTitle = document.getElementById("results-title");
const resultsNote = document.getElementById("results-note");
const grid = document.getElementById("grid");
const removal = document.getElementById("removal");
const removalOff = document.getElementById("removal-off");
const contact = document.getElementById("contact");
const removeButton = document.getElementById("remove");
const selection = document.getElementById("selection");
const removalError = document.getElementById("removal-error");
const removalDone = document.getElementById("removal-done");
const removalDoneTitle = document.getElementById("removal-done-title");
const removalSummary = document.getElementById("removal-summary");
const statusKeep = document.getElementById("status-keep");
const statusLink = document.getElementById("status-link");
const downloadJson = document.getElementById("download-json");
const downloadCsv = document.getElementById("download-csv");
const letters = document.getElementById("letters");

// The selfies added: [{ file, url }], url a blob: URL of the file for its thumbnail (revoked
// when it is removed). Nothing leaves the page until a search.
let selfies = [];
const MAX_SELFIES = 5; // the server's max_selfies (GET /api/info) when it has said it
let requested = null; // the threshold the person chose with the slider; null: the server's
let info = null; // GET /api/info, once loaded
let guide = []; // [{threshold, expected_false_matches}], ascending: what each strictness means
let searchedAt = null; // the threshold the server used for the results shown
let downloads = []; // blob: URLs of the removal request's files, revoked when replaced

// A plain label and a plain meaning per strength; the server's `meaning`, when it sends one,
// says it for this index's size.
const STRENGTH = {
  strong: { icon: "✓", label: "Strong match", meaning: "This is very likely you" },
  possible: { icon: "?", label: "Possible match", meaning: "Possibly you: check the photo" },
};

function showError(box, message) {
  box.textContent = message;
  box.hidden = false;
}

function hideError(box) {
  box.hidden = true;
  box.textContent = "";
}

function clearMessages() {
  hideError(errorBox);
  statusLine.textContent = "";
}

function megabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 1 : 0)} MB`;
}

function plural(n, one, many) {
  return `${n.toLocaleString()} ${n === 1 ? one : many}`;
}

// A threshold as it is: 0.375 reads 0.375 (not a rounded 0.38, which is not what was used),
// 0.4 reads 0.40.
function formatThreshold(t) {
  const three = Number(Number(t).toFixed(3));
  return Math.abs(three - Number(three.toFixed(2))) < 1e-9 ? three.toFixed(2) : String(three);
}

// --- what a threshold means: expected faces of other people at this index's size ----------

function mergeGuide(points) {
  const byThreshold = new Map(guide.map((p) => [p.threshold, p]));
  for (const point of points || []) byThreshold.set(point.threshold, point);
  guide = [...byThreshold.values()].sort((a, b) => a.threshold - b.threshold);
}

// Expected faces of other people at threshold t, interpolated on a log scale between the
// guide's points as the server does; flat beyond its ends. null when the model is uncalibrated.
function expectedAt(t) {
  const points = guide.filter((p) => p.expected_false_matches !== null);
  if (!points.length) return null;
  if (t <= points[0].threshold) return points[0].expected_false_matches;
  for (let i = 1; i < points.length; i += 1) {
    const a = points[i - 1];
    const b = points[i];
    if (t <= b.threshold) {
      const w = (t - a.threshold) / (b.threshold - a.threshold);
      const [ea, eb] = [a.expected_false_matches, b.expected_false_matches];
      if (ea <= 0 || eb <= 0) return ea + w * (eb - ea);
      return Math.exp(Math.log(ea) + w * (Math.log(eb) - Math.log(ea)));
    }
  }
  return points[points.length - 1].expected_false_matches;
}

// An expected number of strangers' faces, said plainly: a count from about one up, else the
// chance of at least one (Poisson), which reads better than "0.02 faces".
function strangers(expected) {
  if (expected >= 0.95) {
    const n = Math.round(expected);
    return { count: n === 1 ? "about one face of someone else"
      : `about ${n.toLocaleString()} faces of other people` };
  }
  const percent = 100 * (1 - Math.exp(-expected));
  if (percent < 0.1) return { chance: "less than a 0.1% chance" };
  return { chance: `about a ${percent >= 1 ? Math.round(percent) : percent.toFixed(1)}% chance` };
}

const UNCALIBRATED =
  "This model has not been calibrated, so the chance of other people's photos appearing " +
  "is unknown.";

function meaning(t, expected, faces) {
  if (expected === null || expected === undefined) return UNCALIBRATED;
  const search = `a search of the ${plural(faces, "face", "faces")} indexed`;
  const { count, chance } = strangers(expected);
  return count
    ? `At strictness ${formatThreshold(t)}, ${search} is expected to bring up ${count}.`
    : `At strictness ${formatThreshold(t)}, there is ${chance} that ${search} brings up ` +
      "someone else's face.";
}

function shortMeaning(t, expected) {
  if (expected === null) return formatThreshold(t);
  const { count, chance } = strangers(expected);
  return `${formatThreshold(t)}: ` +
    `${count ? `${count} expected` : `${chance} of someone else's face`}`;
}

// The slider's lowest position is min_threshold, the default threshold: the server never
// searches below it (more faces of other people would be expected), so the slider only goes
// up from there. It stays disabled until the server has said where that is.
function setFloor(summary) {
  if (typeof summary?.min_threshold === "number") {
    threshold.min = String(Math.max(0, summary.min_threshold));
    const top = Number(threshold.max);
    if (summary.min_threshold > top) threshold.max = String(summary.min_threshold);
    threshold.disabled = false;
  }
}

// The slider at t, widened upwards when t lies above its range (a large index's threshold
// can); never below its floor.
function setSlider(t) {
  if (t > Number(threshold.max)) threshold.max = String(t);
  threshold.value = String(Math.max(t, Number(threshold.min)));
}

function describeSlider() {
  const t = Number(threshold.value);
  thresholdValue.value = formatThreshold(t);
  if (!info && !guide.length) {
    thresholdGuide.textContent = "";
    threshold.removeAttribute("aria-valuetext");
    return;
  }
  const expected = expectedAt(t);
  const faces = info ? info.index_size : Number(results.dataset.faces || 0);
  // Uncalibrated: nothing to say per position, and the results already say so.
  let text = expected === null && !results.hidden ? "" : meaning(t, expected, faces);
  // Only once the slider is away from what the results shown were searched with.
  if (text && searchedAt !== null && Math.abs(t - searchedAt) > 1e-9) {
    text += " Search again to apply it.";
  }
  thresholdGuide.textContent = text;
  threshold.setAttribute("aria-valuetext", shortMeaning(t, expected));
}

// --- results --------------------------------------------------------------------------------

function faceBox(match) {
  if (!match.width || !match.height) return null;
  const [x1, y1, x2, y2] = match.bbox;
  const box = document.createElement("span");
  box.className = "box";
  // Percentages of the photo: the thumbnail keeps its proportions, so they fit any size.
  box.style.left = `${(100 * x1) / match.width}%`;
  box.style.top = `${(100 * y1) / match.height}%`;
  box.style.width = `${(100 * (x2 - x1)) / match.width}%`;
  box.style.height = `${(100 * (y2 - y1)) / match.height}%`;
  return box;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function isWebLink(url) {
  return typeof url === "string" && /^https?:\/\//i.test(url);
}

// Where the photo comes from, as the dataset states it: what a removal request must name.
function provenance(source) {
  const list = element("dl", "provenance");
  const row = (label, value) => {
    list.append(element("dt", "", label), element("dd", "", value));
  };
  row("Dataset", source.dataset || "unknown");
  row("Uploaded by", source.uploader_name || source.uploader_id || "not stated");
  row("Licence", source.licence_name || "not stated by the dataset");
  const link = source.page_url || source.image_url;
  if (isWebLink(link)) {
    const dd = element("dd");
    const a = element("a", "", source.page_url ? "the photo's page" : "the image's address");
    a.href = link;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    dd.append(a);
    list.append(element("dt", "", "Where"), dd);
  }
  return list;
}

// The photo's key, a SHA-256 in it cut to its first 12 digits: enough to tell photos apart.
function shortKey(key) {
  return String(key || "").replace(/(sha256:[0-9a-f]{12})[0-9a-f]+$/, "$1…");
}

function card(match, index) {
  const strength = STRENGTH[match.strength] || STRENGTH.possible;
  const item = element("li", `card ${match.strength === "strong" ? "strong" : "possible"}`);
  const figure = element("figure");
  const frame = element("div", "frame");
  // The photo is named by the dataset's key, never by its path: a path can name the person
  // pictured, and the server does not send it.
  const img = element("img");
  img.src = match.thumbnail;
  img.alt = "The photo found, the matching face boxed, other faces blurred";
  img.loading = "lazy";
  frame.append(img);
  const box = faceBox(match);
  if (box) frame.append(box);

  const caption = element("figcaption");
  if (match.face_thumbnail) {
    const zoom = element("img", "zoom");
    zoom.src = match.face_thumbnail;
    zoom.alt = "Close-up of the matching face";
    zoom.loading = "lazy";
    caption.append(zoom);
  }
  const text = element("div", "meta");
  const key = element("code", "", shortKey(match.image_key));
  key.title = match.image_key; // in full: what the removal request and the letter name
  text.append(element("p", "score", `Similarity ${match.score.toFixed(2)}`), key);
  caption.append(text);
  figure.append(frame, caption);

  const label = element("p", "strength");
  const icon = element("span", "icon", strength.icon);
  icon.setAttribute("aria-hidden", "true");
  label.append(icon, element("span", "", strength.label));
  const said = element("p", "meaning", match.meaning || strength.meaning);
  if (match.new) {
    item.classList.add("new");
    item.append(element("p", "badge", "New: found with the photos you confirmed"));
  } else if (match.expanded) {
    item.classList.add("expanded");
    item.append(element("p", "badge", "Found with your other photos"));
  }
  item.append(label, said);

  if (match.match_id) {
    const pick = element("label", "pick");
    const box = element("input");
    box.type = "checkbox";
    box.checked = true; // all selected by default: untick what is not you
    box.dataset.matchId = match.match_id;
    box.id = `pick-${index}`;
    box.addEventListener("change", describeSelection);
    pick.append(box, element("span", "", "This is me"));
    item.append(pick);
  }
  item.append(figure, provenance(match.provenance || {}));
  return item;
}

function thresholdNote(result) {
  const parts = [];
  if (result.threshold_clamped) {
    const asked = typeof result.threshold_requested === "number"
      ? `You asked for strictness ${formatThreshold(result.threshold_requested)}; it was `
      : "The strictness was ";
    parts.push(`${asked}raised to ${formatThreshold(result.threshold)}: below it, a search ` +
      "of this dataset would show other people's photos.");
  }
  parts.push(meaning(result.threshold, result.expected_false_matches, result.index_size));
  return parts.join(" ");
}

function showResults(result) {
  grid.replaceChildren(...result.matches.map(card));
  const n = result.matches.length;
  const strong = result.matches.filter((m) => m.strength === "strong").length;
  resultsTitle.textContent = n
    ? `${plural(n, "photo", "photos")} with a face like yours` +
      (strong && strong < n ? ` (${strong} strong)` : "")
    : "No photo of this dataset has a face like yours at this strictness.";
  const template = result.template || { selfies: 1, confirmed: 0 };
  resultsNote.textContent = [thresholdNote(result), template.note].filter(Boolean).join(" ");
  results.dataset.faces = result.index_size;
  statusLine.textContent =
    `Searched ${plural(result.index_size, "face", "faces")} with ${searchedWith(template)}, ` +
    `model ${result.model_pack}, strictness ${formatThreshold(result.threshold)}.`;
  results.hidden = false;
  resultsTitle.focus(); // screen readers read the count; phones scroll to the results
  mergeGuide(result.threshold_guide);
  searchedAt = result.threshold;
  setFloor(result);
  setSlider(result.threshold);
  describeSlider();
  hideError(removalError);
  removal.hidden = !result.matches.some((m) => m.match_id);
  confirmPanel.hidden = removal.hidden; // the ticks name photos by their match ids
  removalOff.hidden = !(n && removal.hidden); // the service keeps no removal requests
  again.textContent = "Search again";
  describeSelection();
}

// What a search was made with: "2 selfies and 1 photo you confirmed".
function searchedWith(template) {
  const parts = [plural(template.selfies, "selfie", "selfies")];
  if (template.confirmed) {
    parts.push(`${plural(template.confirmed, "photo", "photos")} you confirmed`);
  }
  if (template.expanded) {
    parts.push(`${plural(template.expanded, "photo", "photos")} very likely of you`);
  }
  return parts.join(" and ");
}

// Search with the selfies, and with the match ids of the photos ticked "This is me" when
// `confirmed` is given (confirmSearch).
async function search(confirmed = []) {
  if (!selfies.length) return;
  clearMessages();
  markRefused(null);
  const limit = info ? info.max_upload_bytes : Infinity;
  const big = selfies.findIndex((s) => s.file.size > limit);
  if (big >= 0) {
    results.hidden = true;
    removal.hidden = true;
    markRefused(big + 1);
    showError(errorBox, `Selfie ${big + 1} is ${megabytes(selfies[big].file.size)}, more ` +
      `than the limit of ${megabytes(limit)}: use a smaller photo.`);
    return;
  }
  statusLine.textContent = "Searching…";
  again.disabled = true;
  confirmSearch.disabled = true;
  const body = new FormData();
  for (const { file } of selfies) body.append("selfie", file);
  for (const id of confirmed) body.append("confirmed", id);
  if (requested !== null) body.append("threshold", String(requested));
  try {
    const response = await fetch("/api/search", { method: "POST", body });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      if (!confirmed.length) { // a refused confirmation keeps the ticks, to untick one
        results.hidden = true;
        removal.hidden = true;
      }
      statusLine.textContent = "";
      markRefused(data?.error?.selfie ?? null);
      showError(errorBox, data?.error?.message ?? `The server answered ${response.status}.`);
      return;
    }
    showResults(data);
  } catch {
    statusLine.textContent = "";
    showError(errorBox, "The server could not be reached. Check your connection and try again.");
  } finally {
    again.disabled = !selfies.length;
    describeSelection();
  }
}

// --- the selfies: added in the page, sent only with a search ------------------------------

function maxSelfies() {
  return info?.max_selfies ?? MAX_SELFIES;
}

// The chip of selfie `number` (1 for the first) outlined as the one an error is about; none
// with null.
function markRefused(number) {
  [...selfiesList.children].forEach((chip, i) => {
    chip.classList.toggle("refused", number === i + 1);
  });
}

function drawSelfies() {
  selfiesList.replaceChildren(...selfies.map((selfie, i) => {
    const chip = element("li", "chip");
    const img = element("img");
    img.src = selfie.url;
    img.alt = `Selfie ${i + 1}`;
    const remove = element("button", "button small remove", "×");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove selfie ${i + 1}`);
    remove.addEventListener("click", () => {
      URL.revokeObjectURL(selfie.url);
      selfies = selfies.filter((s) => s !== selfie);
      drawSelfies();
    });
    chip.append(img, element("span", "number", `Selfie ${i + 1}`), remove);
    return chip;
  }));
  const full = selfies.length >= maxSelfies();
  for (const picker of pickers) picker.disabled = full;
  pickersHelp.textContent = full
    ? `${plural(selfies.length, "selfie", "selfies")}: the most a search takes. Remove one ` +
      "to add another."
    : pickersText;
  again.disabled = !selfies.length;
}

function addSelfies(files) {
  hideError(errorBox);
  const room = maxSelfies() - selfies.length;
  for (const file of files.slice(0, Math.max(0, room))) {
    selfies.push({ file, url: URL.createObjectURL(file) });
  }
  if (files.length > room) {
    showError(errorBox, `A search takes at most ${maxSelfies()} selfies: ` +
      `${room > 0 ? `only ${plural(room, "photo was", "photos were")} added` : "none added"}. ` +
      "Remove one to add another.");
  }
  drawSelfies();
  statusLine.textContent = `${plural(selfies.length, "selfie", "selfies")} ready: press ` +
    `${again.textContent}.`;
}

// --- removal --------------------------------------------------------------------------------

function selectable() {
  return [...grid.querySelectorAll("input[type=checkbox][data-match-id]:not(:disabled)")];
}

function describeSelection() {
  const boxes = selectable();
  const chosen = boxes.filter((b) => b.checked).length;
  removeButton.disabled = chosen === 0;
  confirmSearch.disabled = chosen === 0 || !selfies.length;
  selection.textContent = boxes.length
    ? `${chosen} of ${plural(boxes.length, "photo", "photos")} selected.`
    : "";
}

function download(link, text, type, name) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  downloads.push(url);
  link.href = url;
  link.download = name;
}

function letter(dataset, index) {
  const article = element("article", "letter");
  const count = (dataset.photos || []).length;
  article.append(element("h3", "", `Dataset: ${dataset.dataset || "unknown"}`));
  article.append(element("p", "", dataset.contact
    ? `${plural(count, "photo", "photos")}. Send this letter to ${dataset.contact}.`
    : `${plural(count, "photo", "photos")}. No contact address is configured for this ` +
      "dataset: send this letter to whoever publishes it."));
  const id = `letter-${index}`;
  const label = element("label", "", "The letter");
  label.htmlFor = id;
  const textarea = element("textarea");
  textarea.id = id;
  textarea.readOnly = true;
  textarea.rows = 14;
  textarea.value = dataset.letter || "";
  const actions = element("p", "actions");
  const copy = element("button", "button", "Copy the letter");
  copy.type = "button";
  const copied = element("span", "copied");
  copied.setAttribute("role", "status");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(textarea.value);
      copied.textContent = "Copied.";
    } catch {
      textarea.focus();
      textarea.select();
      copied.textContent = document.execCommand("copy")
        ? "Copied." : "Select the text and copy it.";
    }
  });
  actions.append(copy);
  if (typeof dataset.mailto === "string" && dataset.mailto.startsWith("mailto:")) {
    const mail = element("a", "button primary", "Send it by email");
    mail.href = dataset.mailto;
    actions.append(mail);
  }
  actions.append(copied);
  article.append(label, textarea, actions);
  return article;
}

function showRemoval(data, boxes) {
  for (const url of downloads) URL.revokeObjectURL(url);
  downloads = [];
  const name = `faceaudit-removal-${data.request_id}`;
  const json = typeof data.json === "string" ? data.json
    : `${JSON.stringify(data.json ?? data, null, 2)}\n`;
  download(downloadJson, json, "application/json", `${name}.json`);
  download(downloadCsv, data.csv || "", "text/csv", `${name}.csv`);
  const n = boxes.length;
  removalSummary.textContent =
    `Request ${data.request_id} received. From now on, ${n === 1 ? "this photo is" :
      `these ${n} photos are`} hidden from every search of this service. To have ` +
    `${n === 1 ? "it" : "them"} removed from the dataset itself, send the letter below to ` +
    "the dataset's maintainer.";
  // The link to follow the request: its token is shown only in this answer.
  const followed = typeof data.status_url === "string" && data.status_url.startsWith("/api/");
  statusLink.href = followed ? new URL(data.status_url, window.location.href).href : "#";
  statusLink.textContent = followed ? statusLink.href : "";
  statusKeep.hidden = !followed;
  letters.replaceChildren(...(data.datasets || []).map(letter));
  for (const box of boxes) {
    box.checked = false;
    box.disabled = true;
    const item = box.closest(".card");
    item.classList.add("removed");
    box.nextElementSibling.textContent = "Removal requested: hidden from now on";
  }
  describeSelection();
  removal.hidden = selectable().length === 0;
  removalDone.hidden = false;
  removalDoneTitle.focus();
}

async function requestRemoval() {
  hideError(removalError);
  const boxes = selectable().filter((b) => b.checked);
  if (!boxes.length) return;
  const address = contact.value.trim();
  if (address && !contact.checkValidity()) {
    showError(removalError, "This email address does not look right: correct it, or leave " +
      "the field empty.");
    return;
  }
  const body = { matches: boxes.map((b) => b.dataset.matchId) };
  if (address) body.contact = address;
  removeButton.disabled = true;
  selection.textContent = "Sending your request…";
  try {
    const response = await fetch("/api/removals", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      showError(removalError,
        data?.error?.message ?? `The server answered ${response.status}: try again.`);
      return;
    }
    showRemoval(data, boxes);
  } catch {
    showError(removalError, "The server could not be reached. Check your connection and try " +
      "again.");
  } finally {
    describeSelection();
  }
}

// --- start ----------------------------------------------------------------------------------

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    if (!response.ok) return;
    info = await response.json();
  } catch {
    return; // the page works without it: the server applies its default threshold anyway
  }
  mergeGuide(info.threshold_guide);
  setFloor(info);
  if (requested === null && searchedAt === null) setSlider(info.default_threshold);
  describeSlider();
}

for (const picker of pickers) {
  picker.addEventListener("change", () => {
    const files = [...(picker.files || [])];
    picker.value = ""; // choosing the same photo again still fires "change"
    if (files.length) addSelfies(files);
  });
}

confirmSearch.addEventListener("click", () => {
  search(selectable().filter((b) => b.checked).map((b) => b.dataset.matchId));
});

threshold.addEventListener("input", () => {
  // What a person drags is rounded to 0.01, but never below the floor, and the lowest position
  // is the floor itself; the server's own threshold keeps its decimals.
  const floor = Number(threshold.min);
  const dragged = Number(threshold.value);
  const t = dragged <= floor ? floor : Math.max(Math.round(dragged * 100) / 100, floor);
  threshold.value = String(t);
  requested = t;
  describeSlider();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});

removeButton.addEventListener("click", requestRemoval);

describeSlider();
loadInfo();
