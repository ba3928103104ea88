// EmoTorch demo page: consent, a picture (camera or upload), the emotion, recommendations and feedback.
// Plain browser JavaScript, no build step and no third-party code: everything this page loads comes from
// the gateway itself.
"use strict";

const $ = (id) => document.getElementById(id);

// Domain headings come from the gateway (GET /v1/catalog), the one place the domains are defined.
const domainTitles = {};
const ITEMS_PER_DOMAIN = 3;

const SESSION_KEY = "emotorch-session";
const state = {
  stream: null,
  sessionId: sessionStorage.getItem(SESSION_KEY),
  busy: false,
  attempt: 0, // bumped by every new attempt: an answer that arrives for an older one is dropped
  picture: null, // { bitmap, scale, closeup } of the picture on screen
  faces: [], // every face the gateway found in it, largest first
  chosen: 0, // the face whose reading is shown
};

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

async function problemOf(response) {
  // The gateway answers errors as RFC 9457 problem details, written for programs; the page words them for a
  // person (the tables below), so only the status and the title are read, and nothing of them is shown raw.
  try {
    const body = await response.json();
    return { status: response.status, title: body.title || "" };
  } catch {
    return { status: response.status, title: "" };
  }
}

const CLOSEUP_HINT = "If the face fills the whole picture, tick “Close-up” and try again.";
const PICTURE_MESSAGES = {
  400: "This file could not be read as a picture. Try another photo (JPEG, PNG or WebP).",
  404: `No face was found in this picture. Try a photo where the face is well lit, looks at the camera and is not too small. ${CLOSEUP_HINT}`,
  413: "This picture is too large to send. Try a smaller photo, or take one with the camera.",
  415: "This kind of file cannot be read. Choose a JPEG, PNG or WebP photo.",
  429: "Too many pictures in a short time. Wait a few seconds, then try again.",
  503: "The emotion reader is not available right now. Try again in a minute.",
  504: "The emotion reader took too long to answer. Try again in a moment.",
};
const NO_FACE_IN_CLOSEUP =
  "No face was found in this close-up. Choose a picture of a face, or untick “Close-up” if the picture shows more than a face.";

function pictureMessage(problem) {
  if (problem.title === "No face in the close-up") return NO_FACE_IN_CLOSEUP;
  if (problem.title === "Consent required") return "Tick the consent box first: nothing is sent without it.";
  return PICTURE_MESSAGES[problem.status] || somethingWentWrong(problem.status);
}

function feedbackMessage(problem) {
  if (problem.status === 404 || problem.status === 422) {
    return "These recommendations are no longer stored (deleted or expired). Choose a picture again for new ones.";
  }
  if (problem.status === 429) return "Too many clicks in a short time. Wait a few seconds, then try again.";
  return somethingWentWrong(problem.status);
}

function somethingWentWrong(status) {
  return `Something went wrong on our side (error ${status}). Try again in a moment.`;
}

const UNREACHABLE = "The EmoTorch service could not be reached. Check your connection, then try again.";

function consentGiven() {
  return $("consent").checked;
}

function onConsentChange() {
  const given = consentGiven();
  $("controls").disabled = !given;
  $("consent-hint").hidden = given;
  if (!given) stopCamera();
}

const CAMERA_PROBLEMS = {
  NotAllowedError: "permission to use it was refused (allow it in the browser's site settings)",
  NotFoundError: "no camera was found",
  NotReadableError: "another program is using it",
};

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
    const why = CAMERA_PROBLEMS[error.name] || "it is not available";
    setStatus(status, `The camera could not be opened: ${why}. Upload a photo instead.`, true);
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

function clearAnswer() {
  // Whatever was shown belongs to an earlier picture (or a deleted session): never leave it on screen.
  $("emotion-section").hidden = true;
  $("recs-section").hidden = true;
  $("emotion-summary").textContent = "";
  $("bars").replaceChildren();
  $("domains").replaceChildren();
  setStatus($("feedback-status"), "");
  $("faces-note").hidden = true;
  $("face-choices").replaceChildren();
}

async function showPicture(blob, closeup) {
  const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
  if (state.picture) state.picture.bitmap.close();
  state.picture = { bitmap, scale: Math.min(1, 640 / bitmap.width), closeup };
  state.faces = [];
  drawPicture();
}

function hidePicture() {
  if (state.picture) state.picture.bitmap.close();
  state.picture = null;
  state.faces = [];
  $("picture").hidden = true;
}

function drawPicture() {
  if (!state.picture) return;
  const { bitmap, scale, closeup } = state.picture;
  const canvas = $("picture");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  if (!closeup) state.faces.forEach((face, i) => drawFace(context, face, scale, i));
  canvas.classList.toggle("choosable", state.faces.length > 1);
  canvas.setAttribute("aria-label", state.faces.length ? "Your picture, with the face that was read outlined" : "Your picture");
  canvas.hidden = false;
}

function drawFace(context, face, scale, index) {
  // The face that is read: a yellow box on a dark rim; the others: a white box. Each gets its five
  // landmarks (eyes, nose, mouth corners) and, when there are several faces, its number.
  const chosen = index === state.chosen;
  const [x, y, w, h] = face.box.map((v) => v * scale);
  const line = Math.max(2, context.canvas.width / 160);
  context.lineWidth = line;
  context.strokeStyle = chosen ? "#ffd400" : "#ffffff";
  context.strokeRect(x, y, w, h);
  if (chosen) {
    context.strokeStyle = "#1a1a1a";
    context.lineWidth = line / 2;
    context.strokeRect(x - line, y - line, w + line * 2, h + line * 2);
  }
  for (const [px, py] of face.landmarks || []) {
    context.beginPath();
    context.arc(px * scale, py * scale, Math.max(2, w / 40), 0, 2 * Math.PI);
    context.fillStyle = "#00e5ff";
    context.fill();
  }
  if (state.faces.length > 1) {
    context.font = `bold ${Math.max(14, Math.round(line * 7))}px system-ui, sans-serif`;
    context.fillStyle = chosen ? "#ffd400" : "#ffffff";
    context.fillText(String(index + 1), x + line, y - line * 2);
  }
}

async function analyse(blob) {
  const status = $("status");
  if (!consentGiven()) {
    setStatus(status, "Tick the consent box first: nothing is sent without it.", true);
    return;
  }
  if (state.busy) return;
  state.busy = true;
  const attempt = ++state.attempt;
  clearAnswer();
  setStatus($("delete-status"), "");
  setStatus(status, "Analysing…");
  const closeup = $("closeup").checked;
  try {
    // A file the browser cannot draw is still sent: the gateway says what is wrong with it.
    await showPicture(blob, closeup).catch(hidePicture);
    const response = await fetch("/v1/recommendations", { method: "POST", body: pictureForm(blob, closeup) });
    if (attempt !== state.attempt) return;
    if (!response.ok) {
      setStatus(status, pictureMessage(await problemOf(response)), true);
      return;
    }
    const body = await response.json();
    keepSession(body.session_id); // the same id, or a new one if the old session was erased or expired
    state.faces = body.faces && body.faces.length ? body.faces : body.face ? [body.face] : [];
    state.chosen = 0; // the largest
    drawPicture();
    showAnswer(body, body.emotion);
    setStatus(status, `Done: the face ${describe(body.emotion)}.`);
  } catch {
    setStatus(status, UNREACHABLE, true);
  } finally {
    state.busy = false;
  }
}

function pictureForm(blob, closeup) {
  const form = new FormData();
  form.append("image", blob, blob.name || "picture.jpg");
  form.append("consent", "true");
  form.append("mode", closeup ? "closeup" : "photo");
  form.append("k", String(ITEMS_PER_DOMAIN));
  if (state.sessionId) form.append("session_id", state.sessionId);
  return form;
}

function showAnswer(body, emotion) {
  showEmotion(emotion);
  showRecommendations(body);
  showFaceChoices();
}

function showFaceChoices() {
  const count = state.faces.length;
  $("faces-note").hidden = count < 2;
  if (count < 2) return;
  const which = state.chosen === 0 ? "the largest" : `face ${state.chosen + 1}`;
  $("faces-text").textContent = `${count} faces found — showing ${which}; click a face to read it.`;
  const choices = $("face-choices");
  choices.replaceChildren();
  state.faces.forEach((_, i) => {
    // The same choice for keyboard and screen-reader users as a click on the picture.
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = `Face ${i + 1}`;
    button.setAttribute("aria-pressed", String(i === state.chosen));
    button.addEventListener("click", () => chooseFace(i));
    choices.append(button);
  });
}

function faceAt(event) {
  // Canvas pixels -> the picture's own pixels; the smallest box under the pointer wins where boxes overlap.
  const canvas = $("picture");
  const rect = canvas.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * (canvas.width / rect.width)) / state.picture.scale;
  const y = ((event.clientY - rect.top) * (canvas.height / rect.height)) / state.picture.scale;
  let best = -1;
  state.faces.forEach(({ box: [bx, by, bw, bh] }, i) => {
    const inside = bx <= x && x <= bx + bw && by <= y && y <= by + bh;
    if (inside && (best < 0 || bw * bh < state.faces[best].box[2] * state.faces[best].box[3])) best = i;
  });
  return best;
}

function onPictureClick(event) {
  if (state.faces.length < 2 || !state.picture) return;
  const index = faceAt(event);
  if (index >= 0 && index !== state.chosen) chooseFace(index);
}

async function chooseFace(index) {
  // Each face was read with the picture; recommendations for another one come from its reading, not a new upload.
  if (state.busy || !state.faces[index]) return;
  state.busy = true;
  const attempt = ++state.attempt;
  const face = state.faces[index];
  const status = $("status");
  clearAnswer();
  state.chosen = index;
  drawPicture();
  setStatus(status, `Reading face ${index + 1}…`);
  try {
    const query = { probabilities: face.probabilities, k: ITEMS_PER_DOMAIN };
    if (state.sessionId) query.session_id = state.sessionId;
    const response = await fetch("/v1/recommendations", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(query),
    });
    if (attempt !== state.attempt) return;
    if (!response.ok) {
      setStatus(status, somethingWentWrong(response.status), true);
      return;
    }
    const body = await response.json();
    keepSession(body.session_id);
    const emotion = { probabilities: face.probabilities, uncertain: face.uncertain || body.emotion.uncertain };
    showAnswer(body, emotion);
    setStatus(status, `Done: face ${index + 1} ${describe(emotion)}.`);
  } catch {
    setStatus(status, UNREACHABLE, true);
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

function showEmotion(emotion) {
  $("emotion-summary").textContent = `The face ${describe(emotion)}.`;
  const bars = $("bars");
  bars.replaceChildren();
  for (const [label, p] of Object.entries(emotion.probabilities)) {
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
    heading.textContent = domainTitles[domain] || domain;
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
      setStatus(status, `Feedback not recorded. ${feedbackMessage(await problemOf(response))}`, true);
      return;
    }
    actions.dataset.recorded = event;
    actions.querySelector(`button.${event}`).textContent = event === "like" ? "Liked ✓" : "Dismissed ✓";
    setStatus(status, `Feedback recorded: ${event === "like" ? "liked" : "dismissed"} “${item.title}”.`);
  } catch {
    buttons.forEach((b) => (b.disabled = false));
    setStatus(status, `Feedback not recorded. ${UNREACHABLE}`, true);
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
      const problem = await problemOf(response);
      setStatus(status, `Not deleted. ${problem.status === 429 ? PICTURE_MESSAGES[429] : somethingWentWrong(problem.status)}`, true);
      return;
    }
    keepSession(null); // the next recommendation starts a new session
    state.attempt++; // an answer still on its way belongs to the erased session
    clearAnswer(); // its recommendations are gone: nothing left to like
    state.faces = []; // nor any reading of the picture
    drawPicture();
    setStatus($("status"), "");
    setStatus(status, "Deleted: every recommendation and feedback event of this tab's session is gone. " +
      "Choose a picture again for new recommendations.");
  } catch {
    setStatus(status, `Not deleted. ${UNREACHABLE}`, true);
  }
}

async function loadDomainTitles() {
  try {
    const response = await fetch("/v1/catalog");
    if (!response.ok) return;
    for (const domain of (await response.json()).domains) domainTitles[domain.name] = domain.title;
  } catch {
    // headings fall back to the domain's name
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
  $("picture").addEventListener("click", onPictureClick);
  onConsentChange();
  loadDomainTitles();
  showModelNotice();
});
