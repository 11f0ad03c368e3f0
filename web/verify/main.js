// The verification page (/verify): a file dropped or picked, or a request id, CID or gateway
// URL pasted, checked in this browser against the registry on chain. The server that served
// the page only suggests where to ask (GET api/verify-config: RPC URL, contract, gateway);
// every field can be changed here or in the address (?id=, ?rpc=, ?contract=, ?gateway=,
// ?fromBlock=, ?timeout= seconds), and the verdict comes from the hashes computed here and
// the chain's answers alone.
import { check } from "./check.js";
import { HEADLINE, STATUS } from "./words.js";

const DEFAULT_MAX_BYTES = 100 * 1000 * 1000;
const DEFAULT_TIMEOUT_S = 15;

const $ = (id) => document.getElementById(id);
let config = {}; // what the server suggested
let file = null; // the File to check, if any
let running = false;

// ---------------------------------------------------------------- settings

async function loadConfig() {
  try {
    const answer = await fetch("api/verify-config", { cache: "no-store" });
    if (answer.ok) return await answer.json();
  } catch {
    // served from elsewhere, or the server is down: the fields are filled by hand
  }
  return {};
}

function fillSettings(params) {
  $("rpc-url").value = params.get("rpc") || config.rpcUrl || "";
  $("contract").value = params.get("contract") || config.contract || "";
  $("gateway-url").value = params.get("gateway") || config.gatewayUrl || "";
  $("from-block").value = params.get("fromBlock") || String(config.fromBlock ?? 0);
  $("timeout").value = params.get("timeout") || String(DEFAULT_TIMEOUT_S);
  $("target").value = params.get("id") || params.get("cid") || params.get("target") || "";
  $("max-size").textContent = formatBytes(config.maxBytes || DEFAULT_MAX_BYTES);
  if (params.get("rpc") || params.get("contract") || params.get("gateway")) $("where").open = true;
}

function settings() {
  const timeoutS = Number($("timeout").value);
  const contract = $("contract").value.trim();
  return {
    rpcUrl: $("rpc-url").value.trim(),
    contract,
    gatewayUrl: $("gateway-url").value.trim(),
    fromBlock: $("from-block").value.trim() || "0",
    timeoutMs: (Number.isFinite(timeoutS) && timeoutS > 0 ? timeoutS : DEFAULT_TIMEOUT_S) * 1000,
    maxBytes: config.maxBytes || DEFAULT_MAX_BYTES,
    // The ABI tells whether the deployment has requestOfAudio; only for the contract the
    // server describes.
    abi:
      config.abi && (config.contract || "").toLowerCase() === contract.toLowerCase()
        ? config.abi
        : [],
  };
}

// ---------------------------------------------------------------- the file

function setFile(chosen) {
  file = chosen || null;
  $("file-name").textContent = file ? `${file.name} (${formatBytes(file.size)})` : "";
  $("clear-file").hidden = !file;
  $("drop").classList.toggle("has-file", Boolean(file));
}

function wireDrop() {
  const drop = $("drop");
  $("file").addEventListener("change", () => setFile($("file").files[0]));
  $("clear-file").addEventListener("click", () => {
    $("file").value = "";
    setFile(null);
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    const dropped = event.dataTransfer && event.dataTransfer.files[0];
    if (dropped) setFile(dropped);
  });
}

// ---------------------------------------------------------------- the verdict

function formatBytes(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1048576).toFixed(2)} MiB`;
}

const show = (id, value) => {
  $(id).textContent = value == null || value === "" ? "—" : String(value);
};

function sameMark(id, same) {
  $(id).dataset.same = same == null ? "" : same ? "true" : "false";
}

function render(v, elapsedMs) {
  const box = $("verdict");
  box.dataset.status = v.status;
  box.dataset.elapsedMs = String(Math.round(elapsedMs));
  box.dataset.hashMs = v.hashMs == null ? "" : String(v.hashMs);
  box.hidden = false;
  $("verdict-headline").textContent = HEADLINE[v.status];
  $("verdict-reason").textContent = v.reason;
  show("computed-hash", v.computedAudioHash);
  show("onchain-hash", v.onchainAudioHash);
  show("computed-cid", v.computedCid);
  show("onchain-cid", v.onchainCid);
  sameMark("computed-hash", v.onchainAudioHash && v.computedAudioHash ? v.hashMatches : null);
  sameMark("computed-cid", v.onchainCid && v.computedCid ? v.cidMatches : null);
  show("request-id", v.requestId);
  show("also-registered", (v.alsoRegisteredAs || []).join(", "));
  $("also-registered-row").hidden = !(v.alsoRegisteredAs || []).length;
  show("chain", v.chainId == null ? `${v.contract || "—"}` : `${v.contract} on chain ${v.chainId}`);
  showRegistration(v);
  show(
    "contract-verify",
    v.contractVerify == null ? null : `verify(requestId, computed audioHash) = ${v.contractVerify}`,
  );
  show(
    "manifest",
    v.manifestNote
      ? `${v.manifestMatches === false ? "DIFFERENT: " : ""}${v.manifestNote}`
      : null,
  );
  show("edit", editOf(v));
  $("edit-row").hidden = !v.editSourceKind;
  show("source", v.source);
  show("size", v.size == null ? null : `${v.size} bytes`);
  show("file-type", v.fileType);
  show("lookup", v.lookup);
  show(
    "timing",
    `${(elapsedMs / 1000).toFixed(2)} s in all` +
      (v.hashMs == null ? "" : `, ${(v.hashMs / 1000).toFixed(2)} s hashing`),
  );
}

// What an edit edits, as acesteps verify says it ("edit" and "source hash").
function editOf(v) {
  if (!v.editSourceKind) return null;
  const task = v.editTask || "edit";
  if (v.editSourceKind === "upload") {
    return `${task} of upload ${v.editSourceCid}, audioHash ${v.editSourceAudioHash} ` +
      "(as uploaded: only the manifest says so)";
  }
  const said = v.editSourceMatches ? "the source's registered one"
    : v.editSourceOnchainAudioHash ? `DIFFERENT: registered ${v.editSourceOnchainAudioHash}`
      : "DIFFERENT: the source is not registered";
  return `${task} of request ${v.editSourceId}, audioHash ${v.editSourceAudioHash} (${said})`;
}

function showRegistration(v) {
  const cell = $("registered");
  cell.textContent = "";
  if (v.registeredBlock == null) {
    cell.textContent = "—";
    return;
  }
  cell.append(`block ${v.registeredBlock}, ${v.confirmations} confirmation(s), tx `);
  const explorer = (config.explorerUrl || "").replace(/\/+$/, "");
  const tx = document.createElement(explorer ? "a" : "span");
  tx.className = "mono";
  tx.dataset.testid = "registered-tx";
  tx.id = "registered-tx";
  tx.textContent = v.registeredTx;
  if (explorer) {
    tx.href = `${explorer}/tx/${v.registeredTx}`;
    tx.target = "_blank";
    tx.rel = "noopener";
  }
  cell.append(tx);
}

async function run(event) {
  if (event) event.preventDefault();
  if (running) return;
  running = true;
  const button = $("check");
  button.disabled = true;
  $("result").hidden = false;
  $("verdict").hidden = true;
  $("verdict").dataset.status = "";
  const progress = $("progress");
  progress.hidden = false;
  const started = performance.now();
  const steps = {
    onStep: (text) => {
      progress.textContent = text;
    },
    onBytes: (n) => {
      progress.textContent = `Hashing… ${formatBytes(n)}`;
    },
  };
  let verdict;
  try {
    verdict = await check($("target").value, file, settings(), steps);
  } catch (error) {
    // A bug or a browser limit, not a verdict: said as CANNOT VERIFY, never left hanging.
    console.warn("the check failed", error);
    verdict = { status: STATUS.UNKNOWN, reason: `unexpected error: ${error && error.message}` };
  } finally {
    running = false;
    button.disabled = false;
    progress.hidden = true;
  }
  render(verdict, performance.now() - started);
}

// ---------------------------------------------------------------- start

async function start() {
  config = await loadConfig();
  const params = new URLSearchParams(location.search);
  fillSettings(params);
  wireDrop();
  $("verify-form").addEventListener("submit", run);
  document.body.dataset.ready = "true";
  if ($("target").value) await run();
}

start();
