// The search page: send the selfie to /api/search, draw the photos found with the face boxed,
// a close-up of that face, how sure the match is, and what the strictness means here.
"use strict";

const form = document.getElementById("search-form");
const pickers = [document.getElementById("camera"), document.getElementById("file")];
const preview = document.getElementById("preview");
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

let selfie = null;
let thresholdTouched = false; // until moved, the server's default threshold applies
let info = null; // GET /api/info, once loaded
let guide = []; // [{threshold, expected_false_matches}], ascending: what each strictness means
let searchedAt = null; // the threshold of the results shown

const STRENGTH = {
  strong: { icon: "✓", label: "Strong match" },
  possible: { icon: "?", label: "Possible match — check the photo" },
};

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearMessages() {
  errorBox.hidden = true;
  errorBox.textContent = "";
  statusLine.textContent = "";
}

function megabytes(bytes) {
  return `${(bytes / (1024 * 1024)).toFixed(bytes < 1024 * 1024 ? 1 : 0)} MB`;
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
  const search = `a search of the ${faces.toLocaleString()} face${faces === 1 ? "" : "s"} indexed`;
  const { count, chance } = strangers(expected);
  return count
    ? `At strictness ${t.toFixed(2)}, ${search} is expected to bring up ${count}.`
    : `At strictness ${t.toFixed(2)}, there is ${chance} that ${search} brings up someone ` +
      "else's face.";
}

function shortMeaning(t, expected) {
  if (expected === null) return t.toFixed(2);
  const { count, chance } = strangers(expected);
  return `${t.toFixed(2)}: ${count ? `${count} expected` : `${chance} of someone else's face`}`;
}

function describeSlider() {
  const t = Number(threshold.value);
  thresholdValue.value = t.toFixed(2);
  if (!info && !guide.length) {
    thresholdGuide.textContent = "";
    threshold.removeAttribute("aria-valuetext");
    return;
  }
  const expected = expectedAt(t);
  const faces = info ? info.index_size : Number(results.dataset.faces || 0);
  // Uncalibrated: nothing to say per position, and the results already say so.
  let text = expected === null && !results.hidden ? "" : meaning(t, expected, faces);
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
  if (link && /^https?:\/\//i.test(link)) {
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

function card(match) {
  const strength = STRENGTH[match.strength] || STRENGTH.possible;
  const item = element("li", `card ${match.strength === "strong" ? "strong" : "possible"}`);
  const figure = element("figure");
  const frame = element("div", "frame");
  const img = element("img");
  img.src = match.thumbnail;
  img.alt = `Photo ${match.image}, the matching face boxed`;
  img.loading = "lazy";
  frame.append(img);
  const box = faceBox(match);
  if (box) frame.append(box);

  const caption = element("figcaption");
  if (match.face_thumbnail) {
    const zoom = element("img", "zoom");
    zoom.src = match.face_thumbnail;
    zoom.alt = `Close-up of the matching face in ${match.image}`;
    zoom.loading = "lazy";
    caption.append(zoom);
  }
  const text = element("div", "meta");
  text.append(element("p", "score", `Similarity ${match.score.toFixed(2)}`),
    provenance(match.provenance || {}), element("code", "", match.image));
  caption.append(text);
  figure.append(frame, caption);

  const label = element("p", "strength");
  const icon = element("span", "icon", strength.icon);
  icon.setAttribute("aria-hidden", "true");
  label.append(icon, element("span", "", strength.label));
  item.append(label, figure);
  return item;
}

function showResults(result) {
  grid.replaceChildren(...result.matches.map(card));
  const n = result.matches.length;
  const strong = result.matches.filter((m) => m.strength === "strong").length;
  resultsTitle.textContent = n
    ? `${n} photo${n === 1 ? "" : "s"} with a face like yours` +
      (strong && strong < n ? ` (${strong} strong)` : "")
    : "No photo of this dataset has a face like yours at this strictness.";
  resultsNote.textContent = meaning(result.threshold, result.expected_false_matches,
    result.index_size);
  results.dataset.faces = result.index_size;
  statusLine.textContent =
    `Searched ${result.index_size.toLocaleString()} faces with model ${result.model_pack}, ` +
    `strictness ${result.threshold.toFixed(2)}.`;
  results.hidden = false;
  resultsTitle.focus(); // screen readers read the count; phones scroll to the results
  mergeGuide(result.threshold_guide);
  searchedAt = result.threshold;
  threshold.value = result.threshold;
  describeSlider();
}

async function search() {
  if (!selfie) return;
  clearMessages();
  if (info && selfie.size > info.max_upload_bytes) {
    results.hidden = true;
    showError(`This photo is ${megabytes(selfie.size)}, more than the limit of ` +
      `${megabytes(info.max_upload_bytes)}: use a smaller photo.`);
    return;
  }
  statusLine.textContent = "Searching…";
  again.disabled = true;
  const body = new FormData();
  body.append("selfie", selfie);
  if (thresholdTouched) body.append("threshold", threshold.value);
  try {
    const response = await fetch("/api/search", { method: "POST", body });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      results.hidden = true;
      statusLine.textContent = "";
      showError(data?.error?.message ?? `The server answered ${response.status}.`);
      return;
    }
    showResults(data);
  } catch {
    statusLine.textContent = "";
    showError("The server could not be reached. Check your connection and try again.");
  } finally {
    again.disabled = !selfie;
  }
}

async function loadInfo() {
  try {
    const response = await fetch("/api/info");
    if (!response.ok) return;
    info = await response.json();
  } catch {
    return; // the page works without it: the server applies its default threshold anyway
  }
  mergeGuide(info.threshold_guide);
  if (!thresholdTouched && searchedAt === null) threshold.value = info.default_threshold;
  describeSlider();
}

for (const picker of pickers) {
  picker.addEventListener("change", () => {
    const file = picker.files && picker.files[0];
    picker.value = ""; // choosing the same photo again still fires "change"
    if (!file) return;
    selfie = file;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    search();
  });
}

threshold.addEventListener("input", () => {
  thresholdTouched = true;
  describeSlider();
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});

loadInfo();
