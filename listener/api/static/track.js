// A track page (/tracks/{id}, rendered by the server): draws the waveform of its audio
// (static/waveform.js). No framework, no build.
"use strict";

(function start() {
  const canvas = document.getElementById("waveform");
  if (!canvas || !canvas.dataset.src) return;
  window.AceSteps.drawWaveform(canvas, canvas.dataset.src).catch((error) => {
    canvas.dataset.drawn = "error";
    canvas.setAttribute("aria-label", `Waveform unavailable: ${error.message}`);
  });
})();
