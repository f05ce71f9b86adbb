// The search page: send the selfie to /api/search, draw the photos found with the face boxed.
"use strict";

const form = document.getElementById("search-form");
const pickers = [document.getElementById("camera"), document.getElementById("file")];
const preview = document.getElementById("preview");
const threshold = document.getElementById("threshold");
const thresholdValue = document.getElementById("threshold-value");
const again = document.getElementById("again");
const statusLine = document.getElementById("status");
const errorBox = document.getElementById("error");
const results = document.getElementById("results");
const resultsTitle = document.getElementById("results-title");
const grid = document.getElementById("grid");

let selfie = null;
let thresholdTouched = false; // until moved, the server's default threshold applies

function showError(message) {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function clearMessages() {
  errorBox.hidden = true;
  errorBox.textContent = "";
  statusLine.textContent = "";
}

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

function card(match) {
  const item = document.createElement("li");
  item.className = "card";
  const figure = document.createElement("figure");
  const frame = document.createElement("div");
  frame.className = "frame";
  const img = document.createElement("img");
  img.src = match.thumbnail;
  img.alt = `Photo ${match.image}, the matching face boxed`;
  img.loading = "lazy";
  frame.append(img);
  const box = faceBox(match);
  if (box) frame.append(box);
  const caption = document.createElement("figcaption");
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = `Similarity ${match.score.toFixed(2)}`;
  const path = document.createElement("code");
  path.textContent = match.image;
  caption.append(score, path);
  figure.append(frame, caption);
  item.append(figure);
  return item;
}

function showResults(result) {
  grid.replaceChildren(...result.matches.map(card));
  const n = result.matches.length;
  resultsTitle.textContent = n
    ? `${n} photo${n === 1 ? "" : "s"} with a face like yours`
    : "No photo of this dataset has a face like yours at this strictness.";
  statusLine.textContent =
    `Searched ${result.index_size} faces with model ${result.model_pack}, ` +
    `strictness ${result.threshold.toFixed(2)}.`;
  results.hidden = false;
  resultsTitle.focus(); // screen readers read the count; phones scroll to the results
  threshold.value = result.threshold;
  thresholdValue.value = Number(result.threshold).toFixed(2);
}

async function search() {
  if (!selfie) return;
  clearMessages();
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
  thresholdValue.value = Number(threshold.value).toFixed(2);
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  search();
});
