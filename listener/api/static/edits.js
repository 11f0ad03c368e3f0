// Editing a track on the main page (app.js; acesteps/editing.py): which request options make
// an edit, which of them each task takes, the body an edit sends, and what a record says it
// edits. No DOM, no framework, no build: tests/unit/test_web_edits.py runs it under Node.js.
"use strict";

(function (root) {
  // The options of each task, under their API names (acesteps/options.py, edit_problems).
  const TASK_OPTIONS = {
    repaint: ["repaintStart", "repaintEnd"],
    extend: ["extendBefore", "extendAfter"],
    cover: ["coverStrength"],
    extract: ["stem"],
  };
  const SOURCES = ["sourceTrack", "sourceUpload"];
  const EDIT_OPTIONS = ["task", ...SOURCES, ...Object.values(TASK_OPTIONS).flat()];

  // Whether the form shows option `name` while `task` ("" for none) is chosen: the task
  // itself always, the sources and the task's own options only with it.
  function shown(name, task) {
    if (name === "task") return true;
    if (!EDIT_OPTIONS.includes(name)) return true;
    if (!task) return false;
    return SOURCES.includes(name) || (TASK_OPTIONS[task] || []).includes(name);
  }

  // The body to send: without the edit options the chosen task does not take (values left
  // in hidden fields) and, for an edit, without `duration` (the API derives it from the
  // source).
  function editBody(body) {
    const out = { ...body };
    for (const name of EDIT_OPTIONS) if (!shown(name, out.task || "")) delete out[name];
    if (out.task) delete out.duration;
    return out;
  }

  // The form's values that make a `task` edit of the finished track `id` (the page's
  // Extend, Repaint and Cover; the track pages link to ?task=TASK&sourceTrack=ID).
  function prefill(task, id) {
    if (!Object.hasOwn(TASK_OPTIONS, task)) return null;
    return { task, sourceTrack: id, sourceUpload: "" };
  }

  // What the record `g` edits: {task, kind: "track"|"upload", requestId?, cid?, audioHash?}
  // from its editSource (as the API resolved it), else from its sourceTrack/sourceUpload;
  // null for a request that is no edit.
  function lineage(g) {
    if (!g || !g.task) return null;
    const s = g.editSource;
    if (s && (s.kind === "track" || s.kind === "upload")) {
      return { task: g.task, kind: s.kind, requestId: s.requestId || null, cid: s.cid || null,
        audioHash: s.audioHash || null };
    }
    if (g.sourceTrack) {
      return { task: g.task, kind: "track", requestId: g.sourceTrack, cid: null, audioHash: null };
    }
    if (g.sourceUpload) {
      return { task: g.task, kind: "upload", requestId: null, cid: g.sourceUpload, audioHash: null };
    }
    return null;
  }

  root.AceSteps = root.AceSteps || {};
  root.AceSteps.edits = { TASK_OPTIONS, SOURCES, EDIT_OPTIONS, shown, editBody, prefill, lineage };
})(window);
