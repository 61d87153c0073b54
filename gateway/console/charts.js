// SVG charts drawn from API data: candidate scores, confused routes, the threshold sweep.
// Text goes in with textContent only; nothing from the API is parsed as markup.

const SVG = "http://www.w3.org/2000/svg";

function node(tag, attrs = {}, text = null) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) el.setAttribute(name, String(value));
  if (text !== null) el.textContent = text;
  return el;
}

function reset(svg, width, height) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "xMinYMin meet");
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits);
}

function shorten(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

/**
 * Horizontal bars of the candidates' scores, best first, with the threshold as a dashed
 * line and the required margin as a band ending at the best score (the runner-up must
 * sit left of it for a dispatch).
 */
export function scoresChart(svg, candidates, { threshold, margin, chosen }) {
  const width = 560, left = 120, right = 56, top = 30, row = 30;
  const height = top + Math.max(1, candidates.length) * row + 8;
  reset(svg, width, height);
  if (!candidates.length) return;
  const scores = candidates.map((c) => c.score);
  const lo = Math.min(0, ...scores, threshold ?? 0);
  const hi = Math.max(1, ...scores);
  const x = (v) => left + ((v - lo) / (hi - lo)) * (width - left - right);
  const bottom = height - 4;
  svg.append(node("line", { class: "axis", x1: x(lo), x2: x(lo), y1: top - 6, y2: bottom }));
  const best = scores[0];
  if (margin !== null && margin !== undefined && margin > 0) {
    const start = Math.max(lo, best - margin);
    svg.append(node("rect", {
      class: "margin-band", x: x(start), y: top - 6, width: Math.max(1, x(best) - x(start)),
      height: bottom - top + 6, "data-margin": margin,
    }));
    svg.append(node("text", { class: "note", x: x(best), y: 11, "text-anchor": "end" },
      `margin ${fmt(margin)}`));
  }
  candidates.forEach((c, i) => {
    const y = top + i * row;
    const label = node("text", { x: left - 8, y: y + 17, "text-anchor": "end" }, shorten(c.expert, 16));
    label.append(node("title", {}, c.expert));
    svg.append(label);
    const cls = c.expert === chosen ? "bar chosen" : "bar";
    svg.append(node("rect", {
      class: cls, x: x(lo), y: y + 4, height: row - 10,
      width: Math.max(1, x(c.score) - x(lo)), "data-expert": c.expert, "data-score": c.score,
    }));
    svg.append(node("text", { x: x(c.score) + 4, y: y + 17 }, fmt(c.score)));
  });
  if (threshold !== null && threshold !== undefined) {
    svg.append(node("line", {
      class: "threshold", x1: x(threshold), x2: x(threshold), y1: top - 8, y2: bottom,
      "data-threshold": threshold,
    }));
    svg.append(node("text", { class: "note", x: x(threshold) + 3, y: 24 }, `threshold ${fmt(threshold)}`));
  }
}

/** The most confused routes (true label → where it went), as bars of counts. */
export function confusionsChart(svg, confusions) {
  const width = 520, left = 230, right = 40, top = 8, row = 24;
  const height = top + Math.max(1, confusions.length) * row + 8;
  reset(svg, width, height);
  if (!confusions.length) {
    svg.append(node("text", { x: 8, y: 24 }, "no mistakes: every test request went where its label says"));
    return;
  }
  const most = Math.max(...confusions.map((c) => c.count));
  confusions.forEach((c, i) => {
    const y = top + i * row;
    const name = `${c.label} → ${c.routed}`;
    const label = node("text", { x: left - 6, y: y + 15, "text-anchor": "end" }, shorten(name, 34));
    label.append(node("title", {}, name));
    svg.append(label);
    const w = Math.max(1, (c.count / most) * (width - left - right));
    svg.append(node("rect", { class: "bar confused", x: left, y: y + 3, width: w, height: row - 8 }));
    svg.append(node("text", { x: left + w + 4, y: y + 15 }, String(c.count)));
  });
}

/** In-scope accuracy (and out-of-scope recall) if the threshold were each value. */
export function curveChart(svg, curve, threshold) {
  const width = 520, height = 260, left = 36, right = 12, top = 12, bottom = 34;
  reset(svg, width, height);
  const ts = curve.threshold;
  if (!ts.length) return;
  const lo = ts[0], hi = ts[ts.length - 1];
  const x = (v) => left + ((v - lo) / (hi - lo || 1)) * (width - left - right);
  const y = (v) => top + (1 - v) * (height - top - bottom);
  for (const tick of [0, 0.5, 1]) {
    svg.append(node("line", { class: "axis", x1: left, x2: width - right, y1: y(tick), y2: y(tick) }));
    svg.append(node("text", { class: "note", x: left - 4, y: y(tick) + 4, "text-anchor": "end" }, String(tick)));
  }
  for (const tick of [lo, (lo + hi) / 2, hi]) {
    svg.append(node("text", { class: "note", x: x(tick), y: height - bottom + 14, "text-anchor": "middle" }, fmt(tick, 2)));
  }
  const path = (values) => values.map((v, i) => `${i ? "L" : "M"}${x(ts[i]).toFixed(1)},${y(v).toFixed(1)}`).join("");
  svg.append(node("path", { class: "line-accuracy", d: path(curve.in_scope_accuracy) }));
  const legend = [["line-accuracy", "in-scope accuracy"]];
  if (curve.oos_recall) {
    svg.append(node("path", { class: "line-recall", d: path(curve.oos_recall) }));
    legend.push(["line-recall", "out-of-scope recall"]);
  }
  svg.append(node("line", { class: "threshold", x1: x(threshold), x2: x(threshold), y1: top, y2: height - bottom }));
  legend.push(["threshold", `threshold ${fmt(threshold)}`]);
  legend.forEach(([cls, text], i) => {
    const ly = height - 6, lx = left + i * 150;
    svg.append(node("line", { class: cls, x1: lx, x2: lx + 18, y1: ly - 4, y2: ly - 4 }));
    svg.append(node("text", { class: "note", x: lx + 22, y: ly }, text));
  });
}
