// The Experts, Memory and Evaluation tabs: each a view over public API calls.
import { confusionsChart, curveChart } from "./charts.js";
import { $, api, busy, el, number, when } from "./core.js";

const known = { experts: [] };

function fillSelect(select, names, first) {
  const chosen = select.value;
  const options = names.map((name) => el("option", { value: name }, name));
  select.replaceChildren(...(first ? [el("option", { value: "" }, first)] : []), ...options);
  if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
}

function expertSelect(label) {
  const select = el("select", { "aria-label": label });
  fillSelect(select, known.experts, null);
  return select;
}

// ---------------------------------------------------------------- experts

function latency(report) {
  const { p50, p95 } = report.latency_ms || {};
  return p50 === null || p50 === undefined ? "–" : `${number(p50, 1)} / ${number(p95, 1)} ms`;
}

async function loadExperts() {
  const answer = await api("GET", "/admin/experts");
  known.experts = answer.data.map((e) => e.name);
  fillSelect($("#filter-expert"), known.experts, "any");
  fillSelect($("#add-expert"), known.experts, null);
  const rows = answer.data.map((e) => el("tr", { dataset: { expert: e.name } },
    el("td", {}, el("b", {}, e.name)),
    el("td", {}, e.kind),
    el("td", {}, el("span", { class: e.healthy ? "health up" : "health", title: e.detail || "" },
      e.healthy ? "healthy" : `down${e.detail ? `: ${e.detail}` : ""}`)),
    el("td", { class: "num" }, latency(e)),
    el("td", { class: "num", dataset: { field: "requests" } }, e.requests),
    el("td", { class: "num", dataset: { field: "exemplars" } }, e.exemplars),
    el("td", { class: "num" }, e.examples)));
  $("#experts-table tbody").replaceChildren(...rows);
}

async function reload() {
  const result = $("#reload-result");
  result.replaceChildren(el("p", { class: "muted" }, "reloading…"));
  try {
    const answer = await api("POST", "/admin/reload");
    result.replaceChildren(el("p", { class: "ok", id: "reload-ok" },
      `Reloaded: ${answer.experts.join(", ")}`));
  } catch (error) {
    result.replaceChildren(el("pre", { id: "reload-error", dataset: { code: error.code || "" } },
      error.message));
  }
  await loadExperts().catch(() => {});
}

export const experts = {
  load: loadExperts,
  bind() {
    $("#experts-refresh").addEventListener("click", (e) => busy(e.currentTarget, loadExperts).catch(() => {}));
    $("#reload").addEventListener("click", (e) => busy(e.currentTarget, reload));
  },
};

// ---------------------------------------------------------------- memory

function memoryError(error) {
  $("#memory-error").textContent = error ? error.message : "";
}

async function loadExemplars() {
  const params = new URLSearchParams({ limit: "1000" });
  const expert = $("#filter-expert").value, source = $("#filter-source").value;
  if (expert) params.set("expert", expert);
  if (source) params.set("source", source);
  const answer = await api("GET", `/v1/exemplars?${params}`);
  const needle = $("#filter-text").value.trim().toLowerCase();
  const shown = answer.data.filter((x) => !needle || x.text.toLowerCase().includes(needle));
  const rows = shown.map((x) => el("tr", { dataset: { id: x.id, expert: x.expert } },
    el("td", { class: "text" }, x.text),
    el("td", {}, x.expert),
    el("td", {}, x.source),
    el("td", {}, x.good ? "yes" : "no"),
    el("td", { class: "num" }, when(x.created)),
    el("td", {}, x.source === "config" ? el("span", { class: "muted" }, "in config")
      : el("button", { type: "button", class: "danger", onclick: (e) => remove(e.currentTarget, x.id) }, "Delete"))));
  $("#exemplars-table tbody").replaceChildren(...rows);
  $("#exemplars-count").textContent = `${shown.length} shown of ${answer.data.length}`;
}

async function remove(button, id) {
  memoryError(null);
  await busy(button, async () => {
    try {
      await api("DELETE", `/v1/exemplars/${encodeURIComponent(id)}`);
    } catch (error) {
      memoryError(error);
    }
    await loadExemplars().catch(memoryError);
  });
}

async function promote(button, text, select) {
  memoryError(null);
  await busy(button, async () => {
    try {
      await api("POST", "/v1/exemplars", { expert: select.value, text });
      button.textContent = "Promoted";
    } catch (error) {
      memoryError(error);
    }
    await loadExemplars().catch(memoryError);
  });
}

async function loadRequests() {
  const answer = await api("GET", "/admin/requests?limit=50");
  const rows = answer.data.map((r) => {
    const select = expertSelect("promote to expert");
    if (r.expert && known.experts.includes(r.expert)) select.value = r.expert;
    const go = el("button", { type: "button", onclick: (e) => promote(e.currentTarget, r.text, select) }, "Promote");
    return el("tr", { dataset: { id: r.id } },
      el("td", { class: "num" }, when(r.created)),
      el("td", { class: "text" }, r.text),
      el("td", {}, r.expert ? `${r.action} → ${r.expert}` : r.action),
      el("td", { class: "num" }, number(r.score)),
      el("td", {}, el("div", { class: "row" }, select, go)));
  });
  $("#requests-table tbody").replaceChildren(...rows);
}

async function loadCache() {
  const c = await api("GET", "/admin/cache");
  const rate = c.hit_rate === null ? "–" : `${(c.hit_rate * 100).toFixed(1)}%`;
  $("#cache-stats").replaceChildren(
    el("span", {}, "cache lookups ", el("b", {}, c.lookups)),
    el("span", {}, "exact hits ", el("b", {}, c.hits.exact)),
    el("span", {}, "semantic hits ", el("b", {}, c.hits.semantic)),
    el("span", {}, "hit rate ", el("b", { id: "cache-hit-rate" }, rate)));
}

async function addExemplar(event) {
  event.preventDefault();
  memoryError(null);
  const text = $("#add-text").value.trim();
  const expert = $("#add-expert").value;
  if (!text || !expert) return;
  await busy($("#add-submit"), async () => {
    try {
      await api("POST", "/v1/exemplars", { expert, text });
      $("#add-text").value = "";
    } catch (error) {
      memoryError(error);
    }
    await loadExemplars().catch(memoryError);
  });
}

async function loadMemory() {
  memoryError(null);
  if (!known.experts.length) await loadExperts();
  await Promise.all([loadExemplars(), loadRequests(), loadCache()]).catch(memoryError);
}

export const memory = {
  load: loadMemory,
  bind() {
    for (const id of ["#filter-expert", "#filter-source"]) {
      $(id).addEventListener("change", () => loadExemplars().catch(memoryError));
    }
    $("#filter-text").addEventListener("input", () => loadExemplars().catch(memoryError));
    $("#exemplar-filter").addEventListener("submit", (e) => e.preventDefault());
    $("#exemplar-add").addEventListener("submit", addExemplar);
    $("#requests-refresh").addEventListener("click", () =>
      Promise.all([loadRequests(), loadCache()]).catch(memoryError));
  },
};

// ---------------------------------------------------------------- evaluation

const METRICS = [
  ["in_scope_accuracy", "in-scope accuracy"], ["oos_recall", "out-of-scope recall"],
  ["oos_precision", "out-of-scope precision"], ["clarify_rate", "clarify rate"],
  ["macro_f1", "macro F1"], ["top1_accuracy", "top-1 accuracy (no threshold)"],
  ["accuracy_at_oos_recall_0.9", "accuracy at oos recall 0.9"], ["n_test", "test requests"],
  ["n_experts", "experts"], ["fit_seconds", "fit (s)"],
];

function showEval(result) {
  const m = result.metrics;
  $("#eval-summary").textContent = `${result.summary} — ${m.embedder}`;
  const rows = METRICS.map(([key, label]) => el("tr", { dataset: { metric: key } },
    el("th", {}, label), el("td", { class: "num" },
      typeof m[key] === "number" && !Number.isInteger(m[key]) ? number(m[key], 4) : (m[key] ?? "n/a"))));
  rows.push(el("tr", {}, el("th", {}, "latency p50 / p99 (ms)"),
    el("td", { class: "num" }, `${number(m.latency_ms.p50, 2)} / ${number(m.latency_ms.p99, 2)}`)));
  $("#eval-metrics tbody").replaceChildren(...rows);
  confusionsChart($("#eval-confusions"), result.confusions);
  curveChart($("#eval-curve"), result.curve, result.threshold);
  $("#eval-result").hidden = false;
}

async function runEval(event) {
  event.preventDefault();
  $("#eval-error").textContent = "";
  const [train, test, val] = ["#eval-train", "#eval-test", "#eval-val"].map((id) => $(id).files[0]);
  if (!train || !test) {
    $("#eval-error").textContent = "Choose a train file and a test file.";
    return;
  }
  const body = { train: await train.text(), test: await test.text() };
  if (val) body.validation = await val.text();
  $("#eval-status").textContent = "Running: loading the embedder, fitting, routing every test request…";
  await busy($("#eval-run"), async () => {
    try {
      showEval(await api("POST", "/admin/eval", body));
      $("#eval-status").textContent = "Done.";
    } catch (error) {
      $("#eval-status").textContent = "";
      $("#eval-error").textContent = error.message;
    }
  });
}

export const evaluation = {
  bind() {
    $("#eval-form").addEventListener("submit", runEval);
  },
};
