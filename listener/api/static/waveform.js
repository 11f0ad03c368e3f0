// The waveform of a track, drawn on a canvas from the decoded audio: used by the main page
// (app.js) and the track pages (track.js). No framework, no build.
"use strict";

window.AceSteps = window.AceSteps || {};

// Draws the audio at `url` on `canvas`; canvas.dataset.drawn becomes "true" when done.
window.AceSteps.drawWaveform = async function drawWaveform(canvas, url) {
  canvas.dataset.drawn = "";
  const answer = await fetch(url);
  if (!answer.ok) throw new Error(`HTTP ${answer.status}`);
  // An offline context decodes without the autoplay policy's user-gesture requirement.
  const context = new OfflineAudioContext(1, 1, 44100);
  const audio = await context.decodeAudioData(await answer.arrayBuffer());

  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  canvas.height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  const { width, height } = canvas;
  const g = canvas.getContext("2d");
  const style = getComputedStyle(canvas);
  g.fillStyle = style.backgroundColor;
  g.fillRect(0, 0, width, height);

  // One vertical bar per pixel column: the min and max sample over all channels.
  const channels = [...Array(audio.numberOfChannels).keys()].map((c) => audio.getChannelData(c));
  const perColumn = Math.max(1, Math.floor(audio.length / width));
  const middle = height / 2;
  g.fillStyle = style.color;
  for (let x = 0; x < width; x++) {
    let lo = 0;
    let hi = 0;
    const start = x * perColumn;
    const end = Math.min(audio.length, start + perColumn);
    for (const data of channels) {
      for (let i = start; i < end; i++) {
        if (data[i] < lo) lo = data[i];
        else if (data[i] > hi) hi = data[i];
      }
    }
    const top = middle - Math.min(1, hi) * middle;
    const bottom = middle - Math.max(-1, lo) * middle;
    g.fillRect(x, top, 1, Math.max(1, bottom - top));
  }
  canvas.dataset.drawn = "true";
  canvas.setAttribute("aria-label", `Waveform of the track (${audio.duration.toFixed(1)} s)`);
};
