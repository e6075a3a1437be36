// cuematte browser demo: camera -> WebRTC -> the service -> processed video back; a `control` data channel
// carries the flash window, the background choice and the service's state and stats. No build step.

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token");
// How long the screen stays white. Cameras take a few frames to re-expose; the service keeps the brightest.
const FLASH_MS = Math.min(5000, Math.max(200, Number(params.get("flash_ms")) || 800));
const MAX_IMAGE_SIDE = 960;
const MAX_IMAGE_CHARS = 180_000; // data-URL length; the service takes control messages up to 192 KiB

const ui = {
  start: $("start"), cue: $("cue"), flash: $("flash"), reset: $("reset"), background: $("background"),
  color: $("color"), image: $("image"), state: $("state"), message: $("message"),
  local: $("local"), processed: $("processed"), hint: $("hint"), stats: $("stats"),
  overlay: $("flash-overlay"),
};

const STATE_TEXT = {
  "waiting-flash": "Ready: press Flash to start matting.",
  capturing: "Flash! Hold still…",
  matting: "Matting.",
  "parallax-waiting": "Parallax cue: waiting.",
  "parallax-matting": "Parallax cue: matting.",
  error: "Error.",
};

let pc = null;
let channel = null;
let camera = null; // the local MediaStreamTrack
let imageDataUrl = null;
let flashing = false;

function showMessage(text) {
  ui.message.textContent = text;
  ui.message.hidden = !text;
}

function setState(state, detail, reflash = false) {
  ui.state.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (detail && !["matting", "flash to start", "flash cached"].includes(detail)) text += ` (${detail})`;
  if (reflash) text = "The scene changed: press Flash again.";
  ui.state.textContent = text;
  ui.hint.hidden = state !== "waiting-flash" && state !== "parallax-waiting";
  ui.hint.textContent = state === "parallax-waiting" ? (detail || "Move slightly") : "Flash to start";
  // The service says which cue it runs (a refused switch to parallax stays on flash): keep the menu honest.
  if (state.startsWith("parallax-")) ui.cue.value = "parallax";
  else if (["waiting-flash", "capturing", "matting"].includes(state)) ui.cue.value = "flash";
  if (channel && !flashing && state !== "error") ui.flash.disabled = ui.cue.value !== "flash";
  ui.flash.classList.toggle("reflash", Boolean(reflash));
  if (state === "error") showMessage(detail || "Something went wrong.");
  else if (state === "matting" || state === "parallax-matting") showMessage("");
}

function send(message) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
}

function backgroundMessage() {
  const mode = ui.background.value;
  if (mode === "color") return { type: "set-background", mode, color: ui.color.value };
  if (mode === "image") return imageDataUrl ? { type: "set-background", mode, image: imageDataUrl } : null;
  return { type: "set-background", mode };
}

function onControl(event) {
  let msg;
  try { msg = JSON.parse(event.data); } catch { return; }
  if (msg.type === "state") {
    setState(msg.state, msg.detail, msg.reflash);
  } else if (msg.type === "stats") {
    const f = (v, d = 1) => (typeof v === "number" ? v.toFixed(d) : "–");
    const size = msg.size ? `${msg.size[0]}×${msg.size[1]}` : "";
    ui.stats.textContent = `${f(msg.fps)} fps · ${f(msg.ms)} ms/frame · service latency ${f(msg.latency_ms)} ms · ` +
      `dropped ${msg.dropped} of ${msg.received} · ${size}` +
      (msg.cue === "parallax" ? ` · parallax: ${f(msg.matted_fps)} mattes/s, ${f(msg.parallax_px)} px` : "") +
      // The per-frame graph's own rate, how many frames its output trails the frame shown, and how many frames
      // had to wait for it (a machine too busy for the graph's share).
      (msg.cue !== "parallax" && msg.state === "matting" && typeof msg.graph_fps === "number"
        ? ` · graph ${f(msg.graph_fps)} fps, ${msg.graph_age} frame${msg.graph_age === 1 ? "" : "s"} behind` +
          (msg.graph_waited > 0 ? `, ${f(100 * msg.graph_waited, 0)} % waited for it` : "") : "") +
      (msg.flash ? ` · flash: ${msg.flash.method}, trimap ${f(msg.flash.trimap_ms, 0)} ms, ` +
                   `graph ${f(msg.flash.graph_ms, 0)} ms` : "");
    ui.stats.dataset.fps = msg.fps;
  }
}

function cameraError(err) {
  if (!window.isSecureContext || !navigator.mediaDevices) {
    return "The camera needs a secure page: open it via https:// or http://localhost.";
  }
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Camera access was denied. Allow the camera for this site (the camera icon in the address bar), then press Start camera again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Connect one and press Start camera again.";
    case "NotReadableError":
      return "The camera is busy in another application. Close it and press Start camera again.";
    default:
      return `The camera could not be opened: ${err && err.message ? err.message : err}`;
  }
}

function waitForIce(peer, timeoutMs) {
  // The service does not trickle ICE: send the offer with every candidate in it.
  if (peer.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { peer.removeEventListener("icegatheringstatechange", check); clearTimeout(timer); resolve(); };
    const check = () => { if (peer.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, timeoutMs);
    peer.addEventListener("icegatheringstatechange", check);
  });
}

async function postOffer(description, options) {
  const headers = { "Content-Type": "application/json" };
  if (TOKEN) headers.Authorization = `Bearer ${TOKEN}`;
  let resp;
  try {
    resp = await fetch("/offer", {
      method: "POST", headers,
      body: JSON.stringify({ sdp: description.sdp, type: description.type, options }),
    });
  } catch {
    throw new Error(`Cannot reach the cuematte server at ${location.origin}. Is \`cuematte serve\` running?`);
  }
  let body = {};
  try { body = await resp.json(); } catch { /* not JSON: keep the status */ }
  if (resp.ok) return body;
  const why = body.error || resp.statusText;
  if (resp.status === 401) throw new Error(`The server needs an access token: open this page with ?token=YOUR_TOKEN (${why}).`);
  if (resp.status === 503) throw new Error(`The server is busy: ${why}`);
  throw new Error(`The server refused the connection (${resp.status}): ${why}`);
}

async function start() {
  ui.start.disabled = true;
  showMessage("");
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } }, audio: false,
    });
    camera = stream.getVideoTracks()[0];
    ui.local.srcObject = stream;
    await connect(stream);
  } catch (err) {
    if (camera === null) showMessage(cameraError(err));
    else showMessage(err.message || String(err));
    await stop();
    ui.start.disabled = false;
    return;
  }
}

async function connect(stream) {
  setState("connecting", "connecting to the server…");
  ui.state.textContent = "Connecting to the server…";
  pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTrack(camera, stream);
  channel = pc.createDataChannel("control");
  channel.onmessage = onControl;
  channel.onopen = () => {
    ui.flash.disabled = false;
    ui.reset.disabled = false;
    const bg = backgroundMessage();
    if (bg) send(bg);
    if (ui.cue.value !== "flash") send({ type: "set-cue", cue: ui.cue.value });
  };
  const ours = channel;
  channel.onclose = () => {
    if (channel !== ours) return; // a channel we closed ourselves (stop)
    showMessage("The server ended the session (stopped or restarted). Press Start camera to reconnect.");
    stop().then(() => { ui.start.disabled = false; });
  };
  pc.ontrack = (event) => {
    ui.processed.srcObject = event.streams[0] || new MediaStream([event.track]);
  };
  pc.onconnectionstatechange = () => {
    if (!pc) return;
    if (pc.connectionState === "failed") {
      showMessage("Lost the connection to the server. Press Start camera to reconnect.");
      stop().then(() => { ui.start.disabled = false; });
    } else if (pc.connectionState === "disconnected") {
      showMessage("The connection to the server is interrupted; waiting for it to come back…");
    } else if (pc.connectionState === "connected") {
      showMessage("");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForIce(pc, 3000);
  const mode = ui.background.value;
  const options = { background: mode === "image" && !imageDataUrl ? "blur" : mode };
  if (mode === "color") options.color = ui.color.value;
  const answer = await postOffer(pc.localDescription, options);
  await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
  ui.start.dataset.session = answer.session_id;
}

async function stop() {
  if (pc) pc.close();
  pc = null;
  channel = null;
  if (camera) camera.stop();
  camera = null;
  ui.flash.disabled = true;
  ui.reset.disabled = true;
}

async function setTorch(on) {
  // A phone's rear light where the browser exposes it; the white screen does the job everywhere else.
  try {
    const caps = camera && camera.getCapabilities ? camera.getCapabilities() : {};
    if (caps.torch) await camera.applyConstraints({ advanced: [{ torch: on }] });
  } catch { /* no torch: fine */ }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function flash() {
  if (flashing || !channel || channel.readyState !== "open") return;
  flashing = true;
  ui.flash.disabled = true;
  // flash-begin first: the service takes the newest frame it has as the no-flash reference, and the
  // video lags the data channel, so that frame is from before the screen turns white.
  send({ type: "flash-begin" });
  ui.overlay.hidden = false;
  if (ui.overlay.requestFullscreen) ui.overlay.requestFullscreen().catch(() => {});
  await setTorch(true);
  await sleep(FLASH_MS);
  send({ type: "flash-end" });
  await setTorch(false);
  if (document.fullscreenElement && document.exitFullscreen) document.exitFullscreen().catch(() => {});
  ui.overlay.hidden = true;
  flashing = false;
  ui.flash.disabled = false;
}

function loadImage(file) {
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(file);
    const img = new Image();
    img.onload = () => { URL.revokeObjectURL(url); resolve(img); };
    img.onerror = () => { URL.revokeObjectURL(url); reject(new Error("that file is not an image this browser can read")); };
    img.src = url;
  });
}

async function imageToDataUrl(file) {
  // Downscale and re-encode so the image fits in one data-channel message.
  const img = await loadImage(file);
  const scale = Math.min(1, MAX_IMAGE_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(16, Math.round(img.naturalWidth * scale));
  canvas.height = Math.max(16, Math.round(img.naturalHeight * scale));
  canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
  for (const quality of [0.85, 0.7, 0.55, 0.4, 0.25]) {
    const url = canvas.toDataURL("image/jpeg", quality);
    if (url.length <= MAX_IMAGE_CHARS) return url;
  }
  throw new Error("the image is too detailed to send; try a smaller one");
}

function onBackgroundChange() {
  const mode = ui.background.value;
  ui.color.hidden = mode !== "color";
  ui.image.hidden = mode !== "image";
  if (mode === "image" && !imageDataUrl) {
    ui.image.click();
    return;
  }
  const bg = backgroundMessage();
  if (bg) send(bg);
}

ui.start.addEventListener("click", start);
ui.flash.addEventListener("click", flash);
ui.reset.addEventListener("click", () => send({ type: "reset" }));
ui.cue.addEventListener("change", () => send({ type: "set-cue", cue: ui.cue.value }));
ui.background.addEventListener("change", onBackgroundChange);
ui.color.addEventListener("input", () => { if (ui.background.value === "color") send(backgroundMessage()); });
ui.image.addEventListener("change", async () => {
  const file = ui.image.files && ui.image.files[0];
  if (!file) return;
  try {
    imageDataUrl = await imageToDataUrl(file);
    showMessage("");
    if (ui.background.value === "image") send(backgroundMessage());
  } catch (err) {
    showMessage(`Background image: ${err.message}`);
  }
});
window.addEventListener("pagehide", () => { stop(); });
