// The AceSteps page: submit a request, follow it over server-sent events, play the track,
// draw its waveform and run the same check as `acesteps verify`. No framework, no build.
// URLs are relative so the page also works behind a proxy that mounts it under a prefix.
"use strict";

const STEPS = ["queued", "generating", "publishing", "completed"];
// The stream ends when nothing more will change: failed, canceled, revoked, or a final
// registration.
const ENDED_OTHERWISE = ["failed", "canceled", "revoked"];
const settled = (g) => ENDED_OTHERWISE.includes(g.status) || (g.status === "completed" && g.final);
const KEY_STORAGE = "acesteps.apiKey";
// Fields laid out by hand in index.html; every other request option gets a field built from
// the OpenAPI document's GenerateBody (see addOptionFields), so a new option needs no edit here.
const FIELDS = ["prompt", "tags", "lyrics", "duration", "format"];
let options = []; // [{name, schema}] of the built fields
// Editing a source (static/edits.js): the task's options are laid out in #edit-box.
const edits = window.AceSteps.edits;

const $ = (id) => document.getElementById(id);
let events = null; // the EventSource of the request being followed
let current = null; // its latest record
let lastStep = -1; // the furthest step it reached before a final status

// ---------------------------------------------------------------- API

function headers(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function api(path, options = {}) {
  const answer = await fetch(path, { ...options, headers: headers(options.headers) });
  let body = null;
  try {
    body = await answer.json();
  } catch {
    // not JSON (a proxy's error page): reported below by status code
  }
  if (!answer.ok) {
    const error = (body && body.error) || {};
    throw Object.assign(new Error(error.message || `HTTP ${answer.status}`), {
      status: answer.status,
      code: error.code,
      field: error.field,
    });
  }
  return body;
}

const generationPath = (id, what = "") => `api/generations/${id}${what ? "/" + what : ""}`;

// ---------------------------------------------------------------- the form

function showError(field, message) {
  const slot = $(`${field}-error`);
  const input = $(field);
  if (!slot) return false;
  slot.textContent = message;
  slot.hidden = false;
  input.setAttribute("aria-invalid", "true");
  if (field === "api-key") $("api-key-box").open = true;
  if ($("more-options-fields").contains(input)) $("more-options").open = true;
  input.focus();
  return true;
}

function clearErrors() {
  for (const field of [...FIELDS, ...options.map((o) => o.name), "api-key"]) {
    $(`${field}-error`).hidden = true;
    $(field).removeAttribute("aria-invalid");
  }
  $("form-error").hidden = true;
}

function requestBody() {
  const form = $("generate-form");
  const tags = form.tags.value
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  const duration = form.duration.value.trim();
  const body = {
    prompt: form.prompt.value,
    // An empty or non-numeric duration goes as text so the server names the field.
    duration: duration !== "" && Number.isFinite(Number(duration)) ? Number(duration) : duration,
    format: form.format.value,
    tags,
  };
  if (form.lyrics.value.trim()) body.lyrics = form.lyrics.value;
  for (const { name, schema } of options) {
    const value = optionValue($(name), schema);
    if (value !== undefined) body[name] = value;
  }
  return edits.editBody(body); // an edit: no duration, only its task's options
}

// ---------------------------------------------------------------- editing a source

// Shows the edit options the chosen task takes, and hides the duration (an edit's length
// follows its source).
function updateEditFields() {
  const task = $("task") ? $("task").value : "";
  for (const { name } of options) {
    if (edits.EDIT_OPTIONS.includes(name)) $(name).closest(".field").hidden = !edits.shown(name, task);
  }
  $("source-file-field").hidden = !task;
  $("duration-field").hidden = Boolean(task);
}

// The Extend, Repaint and Cover of a finished track (and the track pages' links to
// ?task=TASK&sourceTrack=ID): the form, filled in to edit it.
function editTrack(task, id, prompt = "") {
  const values = edits.prefill(task, id);
  if (!values || !$("task")) return;
  for (const [name, value] of Object.entries(values)) if ($(name)) $(name).value = value;
  updateEditFields();
  if (prompt && !$("prompt").value.trim()) $("prompt").value = prompt;
  $("request-title").scrollIntoView();
  const first = edits.TASK_OPTIONS[task].find((name) => $(name));
  $(first || "prompt").focus();
}

// "Upload a source": the file goes to POST /api/uploads at once; its CID fills sourceUpload.
async function uploadSource() {
  const input = $("source-file");
  const file = input.files[0];
  const status = $("source-file-status");
  const error = $("source-file-error");
  error.hidden = true;
  input.removeAttribute("aria-invalid");
  if (!file) return;
  status.textContent = `Uploading ${file.name}…`;
  status.hidden = false;
  $("submit").disabled = true;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const u = await api("api/uploads", { method: "POST", body: form });
    $("sourceUpload").value = u.cid;
    $("sourceTrack").value = "";
    const length = u.duration != null ? `${u.duration} s ` : "";
    status.textContent = `Uploaded ${file.name}: ${length}${u.format || ""}, CID ${u.cid}, ` +
      `audioHash ${u.audioHash}.`;
  } catch (failure) {
    status.hidden = true;
    error.textContent = failure.message;
    error.hidden = false;
    input.setAttribute("aria-invalid", "true");
  } finally {
    $("submit").disabled = false;
  }
}

// ---------------------------------------------------------------- options from the OpenAPI document

// The schema itself, or the non-null branch of `anyOf: [X, {type: "null"}]`.
function plainSchema(schema) {
  const branches = (schema.anyOf || []).filter((s) => s.type !== "null");
  return branches.length === 1 ? { ...branches[0], ...schema, anyOf: undefined } : schema;
}

function optionInput(name, schema) {
  let input;
  if (schema.enum) {
    input = document.createElement("select");
    // Described choices (the presets: `x-enumDescriptions`) show their description too.
    const described = schema["x-enumDescriptions"] || {};
    for (const value of ["", ...schema.enum]) {
      const text = value === "" ? "(default)" : String(value);
      const option = new Option(described[value] ? `${text}: ${described[value]}` : text,
        String(value));
      input.add(option);
    }
  } else {
    input = document.createElement("input");
    if (schema.type === "boolean") input.type = "checkbox";
    else if (schema.type === "integer" || schema.type === "number") {
      input.type = "number";
      if (schema.minimum != null) input.min = schema.minimum;
      if (schema.maximum != null) input.max = schema.maximum;
      input.step = schema.type === "integer" ? "1" : "any";
    } else input.type = "text";
    if (schema.type === "array") input.placeholder = "comma separated";
  }
  input.id = name;
  input.name = name;
  input.setAttribute("aria-describedby", `${name}-error`);
  return input;
}

function optionValue(input, schema) {
  if (schema.type === "null") return undefined; // nothing to choose here (no preset offered)
  if (schema.type === "boolean") return input.checked ? true : undefined;
  const text = input.value.trim();
  if (text === "") return undefined; // not asked: the server's default applies
  if (schema.type === "array") return text.split(",").map((t) => t.trim()).filter(Boolean);
  if (schema.type === "integer" || schema.type === "number") {
    // Not a number: sent as text, so the server names the field.
    return Number.isFinite(Number(text)) ? Number(text) : text;
  }
  return text;
}

async function addOptionFields() {
  const answer = await fetch("api/openapi.json");
  if (!answer.ok) return;
  const body = (await answer.json()).components.schemas.GenerateBody;
  for (const [name, property] of Object.entries(body.properties)) {
    if (FIELDS.includes(name)) continue;
    const box = $(edits.EDIT_OPTIONS.includes(name) ? "edit-fields" : "more-options-fields");
    const schema = plainSchema(property);
    const field = document.createElement("div");
    field.className = "field";
    const label = document.createElement("label");
    label.htmlFor = name;
    label.textContent = `${schema.title || name} `;
    if (schema.description) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = `(${schema.description})`;
      label.append(hint);
    }
    const error = document.createElement("p");
    error.className = "field-error";
    error.id = `${name}-error`;
    error.dataset.testid = `error-${name}`;
    error.hidden = true;
    const input = optionInput(name, schema);
    if (name === "task") input.options[0].text = "(none: a new track)";
    field.append(label, input, error);
    // An option that takes only null here (a preset where none is offered) is not shown.
    field.hidden = schema.type === "null";
    box.append(field);
    options.push({ name, schema });
  }
  $("more-options").hidden = !options.some(
    (o) => o.schema.type !== "null" && !edits.EDIT_OPTIONS.includes(o.name),
  );
  if ($("task")) {
    $("edit-box").hidden = false;
    $("task").addEventListener("change", updateEditFields);
    updateEditFields();
    addEditButtons();
  }
}

// A finished track's Extend, Repaint, Cover, ...: one button per task the API takes.
function addEditButtons() {
  const box = $("edit-actions");
  for (const { value: task } of $("task").options) {
    if (!task) continue;
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.task = task;
    button.dataset.testid = `edit-${task}`;
    button.textContent = task[0].toUpperCase() + task.slice(1);
    button.addEventListener("click", () => {
      if (current) editTrack(task, current.id, current.prompt);
    });
    box.append(button, " ");
  }
}

async function submit(event) {
  event.preventDefault();
  clearErrors();
  const button = $("submit");
  button.disabled = true;
  try {
    const record = await api("api/generate?wait=0", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody()),
    });
    history.replaceState(null, "", `?id=${record.id}`);
    follow(record.id, record);
  } catch (error) {
    // "tags.0" names the first tag: show it next to the tags field.
    const field = error.status === 401 ? "api-key" : (error.field || "").split(".")[0];
    if (!showError(field, error.message)) {
      $("form-error").textContent = error.message;
      $("form-error").hidden = false;
    }
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- following a request

function follow(id, record = null) {
  if (events) events.close();
  current = null;
  lastStep = -1;
  $("track").hidden = false;
  $("result").hidden = true;
  $("verify-result").hidden = true;
  $("failure").hidden = true;
  $("request-id").textContent = id;
  $("family").hidden = true;
  $("lineage").hidden = true;
  $("player").removeAttribute("src");
  if (record) render(record);

  const source = new EventSource(generationPath(id, "events"));
  events = source;
  source.addEventListener("status", (message) => {
    const g = JSON.parse(message.data);
    render(g);
    // The stream ends there; without close() EventSource would reconnect.
    if (settled(g)) source.close();
  });
  source.addEventListener("progress", (message) => {
    const p = JSON.parse(message.data);
    if (!current || current.status !== "generating") return;
    showSteps(p);
  });
  source.addEventListener("error", async () => {
    // Still CONNECTING: it reconnects by itself. Another request followed since: not ours.
    if (source.readyState !== EventSource.CLOSED || source !== events) return;
    // Refused outright (unknown or malformed id): say why.
    try {
      render(await api(generationPath(id)));
    } catch (error) {
      setStatus("", error.message);
    }
  });
}

// A request with variations links to each (each is a request of its own, followed by its
// own ?id=); a variation links to the request it is a variation of.
function showFamily(g) {
  const box = $("family");
  const link = (id, text) => {
    const a = document.createElement("a");
    a.href = `?id=${id}`;
    a.textContent = text;
    a.dataset.id = id;
    a.dataset.testid = id === g.parent ? "parent-link" : "variation-link";
    return a;
  };
  box.replaceChildren();
  if (g.children && g.children.length) {
    box.append("Variations: ");
    g.children.forEach((id, i) => {
      if (i) box.append(", ");
      box.append(link(id, `variation ${i + 1}`));
    });
  } else if (g.parent) {
    box.append(`Variation ${g.variation} of `, link(g.parent, g.parent));
  }
  box.hidden = !box.hasChildNodes();
  showLineage(g);
}

// An edit links to the track it edits (followed by its own ?id=), or names the upload's CID.
function showLineage(g) {
  const box = $("lineage");
  const l = edits.lineage(g);
  box.replaceChildren();
  if (l) {
    const task = l.task[0].toUpperCase() + l.task.slice(1);
    if (l.kind === "track") {
      const a = document.createElement("a");
      a.href = `?id=${l.requestId}`;
      a.textContent = l.requestId;
      a.dataset.testid = "source-link";
      box.append(`${task} of track `, a);
    } else {
      const cid = document.createElement("span");
      cid.className = "mono";
      cid.textContent = l.cid;
      cid.dataset.testid = "source-upload";
      box.append(`${task} of uploaded file `, cid);
    }
    if (l.audioHash) box.append(` (audioHash ${l.audioHash})`);
  }
  box.hidden = !l;
}

function setStatus(status, text) {
  $("status").dataset.status = status;
  $("status").textContent = text;
}

function render(g) {
  if (current && current.status === g.status && current.final === g.final) return;
  current = g;
  showFamily(g);
  const step = STEPS.indexOf(g.status);
  if (step >= 0) lastStep = Math.max(lastStep, step);
  const failed = ENDED_OTHERWISE.includes(g.status);

  for (const [i, li] of [...$("steps").children].entries()) {
    const done = i <= lastStep && (i < lastStep || g.status === "completed");
    li.className = done ? "done" : i === lastStep ? "active" : "";
    li.removeAttribute("aria-current");
    if (i === lastStep && !done) li.setAttribute("aria-current", "step");
  }
  const finalStep = $("final-step");
  finalStep.textContent = failed ? g.status[0].toUpperCase() + g.status.slice(1) : "Completed";
  if (failed) finalStep.className = "failed";

  setStatus(g.status, statusText(g));
  $("model-progress").hidden = true;
  if (g.status === "generating" && g.progress) showSteps(g.progress);
  if (failed) {
    const e = g.error || {};
    $("failure").textContent = e.message
      ? `${e.stage ? e.stage + ": " : ""}${e.message}${e.code ? ` (${e.code})` : ""}`
      : `The request was ${g.status}.`;
    $("failure").hidden = false;
  }
  if (g.status === "completed") showTrack(g);
}

// The model's denoising steps while generating (the `progress` events of the stream).
function showSteps(p) {
  const bar = $("model-progress");
  bar.hidden = false;
  bar.value = p.percent;
  const left = p.etaS == null ? "" : `, about ${Math.ceil(p.etaS)} s left`;
  setStatus("generating", `Generating the audio… ${Math.round(p.percent)}% (step ${p.stepsDone} of ${p.stepsTotal}${left}).`);
}

function statusText(g) {
  switch (g.status) {
    case "queued":
      return "Queued: waiting for a generator.";
    case "generating":
      return "Generating the audio…";
    case "publishing":
      return "Publishing: pinning to IPFS and registering on chain…";
    case "completed":
      return g.final
        ? "Completed: pinned and registered (final)."
        : `Completed: pinned and registered (${g.confirmations || 1} confirmation(s), not final yet).`;
    default:
      return `${g.status[0].toUpperCase()}${g.status.slice(1)}.`;
  }
}

// ---------------------------------------------------------------- the track

function showTrack(g) {
  const audioPath = generationPath(g.id, "audio");
  // Shown again when the registration turns final (or moves): the file is the same, so the
  // player and the waveform are left alone (setting src again would reload the player).
  const same = $("player").getAttribute("src") === audioPath;
  $("result").hidden = false;
  if (!same) $("player").src = audioPath;
  $("download").href = audioPath;
  $("size").textContent = g.sizeBytes ? `(${g.format}, ${formatBytes(g.sizeBytes)})` : "";

  $("audio-hash").textContent = g.audioHash || "";
  const cid = $("cid");
  cid.textContent = g.cid || "";
  // Prefer the HTTP gateway URL; ipfs:// needs a browser that speaks IPFS.
  const urls = g.ipfsUrls || [];
  cid.href = urls.find((u) => /^https?:/.test(u)) || urls[0] || "";
  $("tx-hash").textContent = g.txHash || "";
  $("block").textContent = [
    g.blockNumber != null ? `block ${g.blockNumber}` : "",
    g.chainId != null ? `chain ${g.chainId}` : "",
  ]
    .filter(Boolean)
    .join(", ");
  $("contract").textContent = g.contract || "";
  $("model").textContent = [g.model, g.modelId, g.seed != null ? `seed ${g.seed}` : ""]
    .filter(Boolean)
    .join(", ");
  // The style preset it asked for, and the digest of the LoRA adapter that ran (if any).
  const preset = [g.preset, g.adapterDigest ? `adapter ${g.adapterDigest}` : ""]
    .filter(Boolean)
    .join(", ");
  $("preset-used").textContent = preset;
  for (const row of document.querySelectorAll(".preset-row")) row.hidden = !preset;
  $("verify-button").disabled = false;
  $("edit-actions").hidden = !$("task");
  $("verify-in-browser").href = `verify?id=${g.id}`;
  $("track-page").href = `tracks/${g.id}`;
  $("track-page").textContent = `tracks/${g.id}`;
  if (same) return;
  showProvenance(g).catch(() => {
    $("provenance").hidden = true; // no manifest to show (yet): the rest stands
  });
  drawWaveform(audioPath).catch((error) => {
    $("waveform").dataset.drawn = "error";
    $("waveform").setAttribute("aria-label", `Waveform unavailable: ${error.message}`);
  });
}

// The generation manifest, as the API serves it (checked against the chain there; the page's
// Verify checks it again against the chain through the API's verify).
async function showProvenance(g) {
  if (!g.manifestCid) return;
  const m = await api(generationPath(g.id, "manifest"));
  const link = $("manifest-link");
  link.textContent = g.manifestHash;
  link.href = generationPath(g.id, "manifest");
  $("prov-model").textContent = [m.model.id, m.model.revision, m.model.dtype]
    .filter(Boolean)
    .join(", ");
  $("prov-weights").textContent = m.model.weights_digest;
  const a = m.adapter;
  $("prov-adapter").textContent = a
    ? `${a.file} (preset ${a.preset}, scale ${a.scale}), ${a.digest}`
    : "";
  for (const row of document.querySelectorAll(".prov-adapter-row")) row.hidden = !a;
  $("prov-sampling").textContent =
    `seed ${m.job.seed}, ${m.sampling.steps} steps, shift ${m.sampling.shift}, ` +
    `guidance ${m.sampling.guidance_scale}`;
  const p = m.environment.packages;
  $("prov-software").textContent = ["torch", "diffusers", "transformers"]
    .map((name) => `${name} ${p[name] || "?"}`)
    .join(", ");
  const d = m.environment.device;
  $("prov-device").textContent = [d.type, d.name, d.capability && `sm ${d.capability}`,
    `${d.threads} thread(s)`].filter(Boolean).join(", ");
  $("prov-command").textContent = `acesteps reproduce ${g.id}`;
  $("provenance").hidden = false;
}

function formatBytes(n) {
  return n < 1024 * 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1048576).toFixed(2)} MiB`;
}

// The waveform is drawn by static/waveform.js, shared with the track pages (/tracks/{id}).
function drawWaveform(url) {
  return window.AceSteps.drawWaveform($("waveform"), url);
}

// ---------------------------------------------------------------- verify

async function verify() {
  if (!current) return;
  const button = $("verify-button");
  const box = $("verify-result");
  button.disabled = true;
  $("verify-status").textContent = "Checking…";
  box.dataset.status = "";
  box.hidden = false;
  try {
    const v = await api(generationPath(current.id, "verify"));
    box.dataset.status = v.status;
    $("verify-status").textContent = v.status.replace("_", " ");  // NOT_REGISTERED: two words
    $("verify-reason").textContent = v.reason || "";
    $("verify-onchain-hash").textContent = v.onchainAudioHash || "—";
    $("verify-computed-hash").textContent = v.computedAudioHash || "—";
    $("verify-onchain-cid").textContent = v.onchainCid || "—";
    $("verify-computed-cid").textContent = v.computedCid || "—";
    $("verify-contract").textContent =
      v.contractVerify == null ? "not asked" : v.contractVerify ? "true" : "false";
    $("verify-tx").textContent = v.registeredTx || "—";
    $("verify-manifest").textContent =
      v.manifestMatches == null ? v.manifestNote || "not checked"
        : v.manifestMatches ? "matches its registration" : `DIFFERENT: ${v.manifestNote}`;
    $("verify-edit").textContent = verifiedSource(v);
    $("verify-edit-row").hidden = !v.editSourceKind;
  } catch (error) {
    box.dataset.status = "ERROR";
    $("verify-status").textContent = "ERROR";
    $("verify-reason").textContent = error.message;
  } finally {
    button.disabled = false;
  }
}

// What the verdict says of an edit's source (acesteps verify's "edit" and "source hash").
function verifiedSource(v) {
  if (!v.editSourceKind) return "";
  if (v.editSourceKind === "upload") {
    return `uploaded file ${v.editSourceCid} (audioHash ${v.editSourceAudioHash}: only the ` +
      "manifest says so)";
  }
  const said = v.editSourceMatches ? "the source's registered audioHash"
    : v.editSourceOnchainAudioHash ? `DIFFERENT: registered ${v.editSourceOnchainAudioHash}`
      : "DIFFERENT: the source is not registered";
  return `track ${v.editSourceId} (audioHash ${v.editSourceAudioHash}: ${said})`;
}

// ---------------------------------------------------------------- start

async function start() {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => {
    const value = key.value.trim();
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
  });
  $("generate-form").addEventListener("submit", submit);
  $("verify-button").addEventListener("click", verify);
  $("source-file").addEventListener("change", uploadSource);

  try {
    await addOptionFields();
  } catch (error) {
    console.warn("no further options: the OpenAPI document did not load", error);
  }
  const query = new URLSearchParams(location.search);
  const id = query.get("id");
  if (id) follow(id.trim());
  if (query.get("task") && query.get("sourceTrack")) {
    editTrack(query.get("task"), query.get("sourceTrack").trim());
  }
  document.body.dataset.ready = "true";
}

start();
