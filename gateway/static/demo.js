// EmoTorch demo page: consent, a picture (camera or upload), the emotion, recommendations and feedback.
// Plain browser JavaScript, no build step and no third-party code: everything this page loads comes from
// the gateway itself.
"use strict";

const $ = (id) => document.getElementById(id);

const DOMAIN_TITLES = { products: "Products", places: "Places to visit", food: "Food", songs: "Songs", movies: "Movies" };
const ITEMS_PER_DOMAIN = 3;

const SESSION_KEY = "emotorch-session";
const state = { stream: null, sessionId: sessionStorage.getItem(SESSION_KEY), busy: false };

function keepSession(id) {
  // The gateway issues the session id with the first recommendation. It is a capability: whoever holds it can
  // send feedback on the session's recommendations and erase them, so it stays in this tab only and is never shown.
  state.sessionId = id;
  if (id) sessionStorage.setItem(SESSION_KEY, id);
  else sessionStorage.removeItem(SESSION_KEY);
  $("session-state").textContent = id ? "started" : "none yet";
}

function setStatus(element, text, isError = false) {
  element.textContent = text;
  element.classList.toggle("error", isError);
}

async function problemText(response) {
  // The gateway answers errors as RFC 9457 problem details; show their detail.
  try {
    const body = await response.json();
    return body.detail || body.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

function consentGiven() {
  return $("consent").checked;
}

function onConsentChange() {
  const given = consentGiven();
  $("controls").disabled = !given;
  $("consent-hint").hidden = given;
  if (!given) stopCamera();
}

async function startCamera() {
  if (!consentGiven()) return;
  const status = $("status");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(status, "This browser offers no camera here: upload a photo instead.", true);
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (error) {
    setStatus(status, `The camera could not be opened (${error.name}): upload a photo instead.`, true);
    return;
  }
  const video = $("camera");
  video.srcObject = state.stream;
  video.hidden = false;
  await video.play();
  $("camera-capture").hidden = false;
  $("camera-start").hidden = true;
  setStatus(status, "Camera on. Take a picture when ready.");
  $("camera-capture").focus();
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $("camera").hidden = true;
  $("camera-capture").hidden = true;
  $("camera-start").hidden = false;
}

function captureFrame() {
  const video = $("camera");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  stopCamera();
  canvas.toBlob((blob) => analyse(blob), "image/jpeg", 0.92);
}

function onFileChosen(event) {
  const file = event.target.files[0];
  event.target.value = ""; // choosing the same file again analyses it again
  if (file) analyse(file);
}

async function drawPicture(blob, box) {
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  const canvas = $("picture");
  const scale = Math.min(1, 640 / bitmap.width);
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  if (box) {
    const [x, y, w, h] = box.map((v) => v * scale);
    context.lineWidth = Math.max(2, canvas.width / 160);
    context.strokeStyle = "#ffd400";
    context.strokeRect(x, y, w, h);
    context.strokeStyle = "#1a1a1a";
    context.lineWidth /= 2;
    context.strokeRect(x - context.lineWidth * 2, y - context.lineWidth * 2, w + context.lineWidth * 4, h + context.lineWidth * 4);
  }
  canvas.hidden = false;
}

async function analyse(blob) {
  const status = $("status");
  if (!consentGiven()) {
    setStatus(status, "Tick the consent box first: nothing is sent without it.", true);
    return;
  }
  if (state.busy) return;
  state.busy = true;
  setStatus(status, "Analysing…");
  const form = new FormData();
  form.append("image", blob, blob.name || "picture.jpg");
  form.append("consent", "true");
  form.append("mode", $("closeup").checked ? "face" : "photo");
  form.append("k", String(ITEMS_PER_DOMAIN));
  if (state.sessionId) form.append("session_id", state.sessionId);
  try {
    const response = await fetch("/v1/recommendations", { method: "POST", body: form });
    if (!response.ok) {
      const detail = await problemText(response);
      await drawPicture(blob, null).catch(() => {});
      const hint = response.status === 404 ? " If your face fills the picture, tick the close-up option." : "";
      setStatus(status, `${detail}${hint}`, true);
      return;
    }
    const body = await response.json();
    keepSession(body.session_id); // the same id, or a new one if the old session was erased or expired
    await drawPicture(blob, body.face ? body.face.box : null);
    showEmotion(body);
    showRecommendations(body);
    setStatus(status, `Done: the face ${describe(body.emotion)}.`);
  } catch (error) {
    setStatus(status, `The gateway could not be reached (${error.message}).`, true);
  } finally {
    state.busy = false;
  }
}

function percent(p) {
  return `${Math.round(p * 100)} %`;
}

function describe(emotion) {
  const [top, p] = Object.entries(emotion.probabilities).reduce((a, b) => (b[1] > a[1] ? b : a));
  if (emotion.uncertain) return `shows no clear emotion (most likely ${top}, ${percent(p)})`;
  return `reads as ${top} (${percent(p)})`;
}

function showEmotion(body) {
  $("picture").setAttribute("aria-label", body.face ? "Your picture, with the face that was read outlined" : "Your picture");
  $("emotion-summary").textContent = `The face ${describe(body.emotion)}.`;
  const bars = $("bars");
  bars.replaceChildren();
  for (const [label, p] of Object.entries(body.emotion.probabilities)) {
    const row = document.createElement("li");
    row.className = "bar";
    row.dataset.emotion = label;
    const name = document.createElement("span");
    name.className = "bar-label";
    name.textContent = label;
    const track = document.createElement("span");
    track.className = "bar-track";
    track.setAttribute("role", "meter");
    track.setAttribute("aria-label", label);
    track.setAttribute("aria-valuemin", "0");
    track.setAttribute("aria-valuemax", "100");
    track.setAttribute("aria-valuenow", String(Math.round(p * 100)));
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    row.append(name, track, value);
    bars.append(row);
  }
  $("emotion-section").hidden = false;
}

function showRecommendations(body) {
  const container = $("domains");
  container.replaceChildren();
  setStatus($("feedback-status"), "");
  for (const [domain, items] of Object.entries(body.domains)) {
    const section = document.createElement("section");
    section.className = "domain";
    section.dataset.domain = domain;
    const heading = document.createElement("h3");
    heading.textContent = DOMAIN_TITLES[domain] || domain;
    const list = document.createElement("ul");
    for (const item of items) list.append(itemRow(body.recommendation_id, item));
    section.append(heading, list);
    container.append(section);
  }
  $("recs-section").hidden = false;
}

function itemRow(recommendationId, item) {
  const row = document.createElement("li");
  row.className = "item";
  row.dataset.itemId = item.item_id;
  const title = document.createElement("strong");
  title.textContent = item.title;
  const reason = document.createElement("span");
  reason.className = "reason";
  reason.textContent = item.reason;
  if (item.illustrative) {
    // Invented example items are labelled as such; the movies are real films (see the catalog's provenance).
    const badge = document.createElement("span");
    badge.className = "illustrative";
    badge.textContent = "illustrative example";
    title.append(" ", badge);
  }
  const actions = document.createElement("span");
  actions.className = "actions";
  for (const [event, text] of [["like", "Like"], ["dismiss", "Dismiss"]]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = event;
    button.textContent = text;
    button.setAttribute("aria-label", `${text} ${item.title}`);
    button.addEventListener("click", () => sendFeedback(recommendationId, item, event, actions));
    actions.append(button);
  }
  row.append(title, reason, actions);
  return row;
}

async function sendFeedback(recommendationId, item, event, actions) {
  const buttons = actions.querySelectorAll("button");
  buttons.forEach((b) => (b.disabled = true));
  const status = $("feedback-status");
  try {
    const response = await fetch("/v1/feedback", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ recommendation_id: recommendationId, item_id: item.item_id, event, session_id: state.sessionId }),
    });
    if (!response.ok) {
      buttons.forEach((b) => (b.disabled = false));
      setStatus(status, `Feedback not recorded: ${await problemText(response)}`, true);
      return;
    }
    actions.dataset.recorded = event;
    actions.querySelector(`button.${event}`).textContent = event === "like" ? "Liked ✓" : "Dismissed ✓";
    setStatus(status, `Feedback recorded: ${event === "like" ? "liked" : "dismissed"} “${item.title}”.`);
  } catch (error) {
    buttons.forEach((b) => (b.disabled = false));
    setStatus(status, `Feedback not recorded: the gateway could not be reached (${error.message}).`, true);
  }
}

async function deleteFeedback() {
  const status = $("delete-status");
  if (!state.sessionId) {
    setStatus(status, "Nothing is stored for this tab yet.");
    return;
  }
  try {
    const response = await fetch(`/v1/sessions/${encodeURIComponent(state.sessionId)}`, { method: "DELETE" });
    if (!response.ok) {
      setStatus(status, `Not deleted: ${await problemText(response)}`, true);
      return;
    }
    keepSession(null); // the next recommendation starts a new session
    setStatus(status, "Deleted: every recommendation and feedback event of this tab's session is gone.");
  } catch (error) {
    setStatus(status, `Not deleted: the gateway could not be reached (${error.message}).`, true);
  }
}

async function showModelNotice() {
  // The served model says where its weights come from and whether it was trained on the synthetic faces.
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) return;
    const model = await response.json();
    const weights = model.weights || {};
    if (model.synthetic_training_data) {
      $("model-notice").textContent =
        "Notice: the model in use was trained on synthetic faces only; its answers on real photos are not meaningful.";
    } else if (weights.name && weights.name !== "scratch") {
      $("model-notice").textContent =
        `Model: ${model.card_data?.model?.architecture ?? "emotion"} v${model.version}, trained on real faces ` +
        `(FER2013) by its authors; ${weights.reported}. It reads a facial expression, not a feeling.`;
    }
  } catch {
    // the notice is informative only
  }
}

document.addEventListener("DOMContentLoaded", () => {
  keepSession(state.sessionId);
  $("consent").addEventListener("change", onConsentChange);
  $("camera-start").addEventListener("click", startCamera);
  $("camera-capture").addEventListener("click", captureFrame);
  $("photo").addEventListener("change", onFileChosen);
  $("delete-feedback").addEventListener("click", deleteFeedback);
  onConsentChange();
  showModelNotice();
});
