// The console's entry point: tabs, the admin key, and the playground.
import { scoresChart } from "./charts.js";
import { $, ApiError, api, el, number, onAuthFailure, storeKey, storedKey, streamChat } from "./core.js";
import { experts, memory, evaluation } from "./panels.js";

const TABS = ["playground", "experts", "memory", "evaluation"];
const loaders = { playground: async () => {}, experts: experts.load, memory: memory.load, evaluation: async () => {} };

// ---------------------------------------------------------------- tabs and the key

function currentTab() {
  const name = location.hash.slice(1);
  return TABS.includes(name) ? name : "playground";
}

function showTab(name) {
  for (const tab of TABS) {
    $(`#tab-${tab}`).setAttribute("aria-selected", String(tab === name));
    $(`#${tab}`).hidden = tab !== name;
  }
  loaders[name]().catch(() => {});
}

function keyLabel() {
  $("#key-state").textContent = storedKey() ? "admin key set (this tab)" : "no key";
}

function askForKey(error) {
  const dialog = $("#login");
  let message = "";
  if (error && error.status === 403) message = "This key is not an admin key.";
  else if (error && storedKey()) message = `The gateway refused the key: ${error.message}`;
  $("#key-error").textContent = message;
  if (!dialog.open) dialog.showModal();
  $("#key-input").focus();
}

async function useKey(event) {
  event.preventDefault();
  const key = $("#key-input").value.trim();
  storeKey(key);
  keyLabel();
  try {
    await experts.load();
  } catch (error) {
    if (error instanceof ApiError) $("#key-error").textContent = error.status === 403
      ? "This key is not an admin key." : `The gateway refused the key: ${error.message}`;
    return;
  }
  $("#key-input").value = "";
  $("#login").close();
  showTab(currentTab());
}

// ---------------------------------------------------------------- playground

const chat = { messages: [], busy: false };

function bubble(role, text, meta) {
  const item = el("li", { class: role }, meta ? el("span", { class: "meta" }, meta) : null,
    el("span", { class: "content" }, text));
  $("#conversation").append(item);
  item.scrollIntoView({ block: "nearest" });
  return item;
}

function field(name, label, ...value) {
  return [el("dt", {}, label), el("dd", { dataset: { field: name } }, ...value)];
}

function renderRoute(route, explain) {
  const policy = explain ? `threshold ${number(explain.threshold)}, margin ${number(explain.margin)} (${explain.scale})` : "–";
  const summary = el("dl", {},
    ...field("action", "decision", el("span", { class: `badge ${route.action}` }, route.action)),
    ...field("expert", "expert", route.expert || "–"),
    ...field("reason", "reason", route.reason),
    ...field("score", "score", number(route.score)),
    ...field("margin", "lead over runner-up", number(route.margin)),
    ...(route.in_scope === null || route.in_scope === undefined ? []
      : field("in_scope", "probability some expert fits", number(route.in_scope))),
    ...field("policy", "policy", policy),
    ...field("cached", "cached", route.cached || "no"),
  );
  if (route.question) summary.append(...field("question", "question", route.question));
  $("#route-summary").replaceChildren(summary);
  // With a head the threshold applies to the probability that some expert fits and the
  // margin to shares of it, not to these bars: they are drawn on the similarity scale only.
  const onBars = explain && explain.scale === "similarity";
  scoresChart($("#route-chart"), route.candidates || [], {
    threshold: onBars ? explain.threshold : null,
    margin: onBars ? explain.margin : null,
    chosen: route.expert,
  });
  $("#route-caption").textContent = !explain ? ""
    : onBars ? "cosine similarity per expert; dashed: threshold, band: required margin"
    : "calibrated probability per expert; they sum to the probability that some expert fits, which the threshold applies to";
  const rows = (explain ? explain.exemplars : []).map((s) => el("tr", { dataset: { expert: s.expert } },
    el("td", { class: "text" }, s.text), el("td", {}, s.expert),
    el("td", { class: "num" }, number(s.similarity)), el("td", {}, s.source)));
  $("#support tbody").replaceChildren(...rows);
}

function showClarification(route) {
  const box = $("#clarify");
  if (route.action !== "clarify" || !route.question) {
    box.hidden = true;
    return;
  }
  const buttons = (route.options || []).map((option) =>
    el("button", { type: "button", dataset: { option }, onclick: () => send(option) }, option));
  $("#clarify-options").replaceChildren(...buttons);
  box.hidden = false;
}

async function explainRoute(messages) {
  try {
    const answer = await api("POST", "/v1/route", { messages, explain: true });
    return answer.route;
  } catch (error) {
    $("#route-summary").replaceChildren(el("p", { class: "error" }, error.message));
    return null;
  }
}

async function streamAnswer(messages, item) {
  const content = item.querySelector(".content");
  let route = null;
  for await (const chunk of streamChat({ model: "auto", messages })) {
    if (chunk.error) throw new ApiError(500, chunk);
    if (chunk.route) route = chunk.route;
    const delta = chunk.choices && chunk.choices[0] ? chunk.choices[0].delta : null;
    if (delta && delta.content) content.textContent += delta.content;
  }
  return { route, text: content.textContent };
}

async function send(text) {
  text = text.trim();
  if (!text || chat.busy) return;
  chat.busy = true;
  $("#ask-send").disabled = true;
  $("#clarify").hidden = true;
  const messages = [...chat.messages, { role: "user", content: text }];
  bubble("user", text);
  const explained = await explainRoute(messages);
  if (explained) renderRoute(explained, explained.explain);
  const item = bubble("assistant", "", "…");
  try {
    const { route, text: answer } = await streamAnswer(messages, item);
    if (route) {
      renderRoute(route, explained ? explained.explain : null);
      item.querySelector(".meta").textContent = route.expert ? `${route.action} → ${route.expert}` : route.action;
      if (route.action === "clarify") item.classList.add("question");
      showClarification(route);
    }
    chat.messages = [...messages, { role: "assistant", content: answer }];
  } catch (error) {
    item.classList.add("failed");
    item.querySelector(".meta").textContent = error.code || "error";
    item.querySelector(".content").textContent = error.message;
  } finally {
    chat.busy = false;
    $("#ask-send").disabled = false;
  }
}

function resetConversation() {
  chat.messages = [];
  $("#conversation").replaceChildren();
  $("#clarify").hidden = true;
  $("#route-summary").replaceChildren(el("p", { class: "muted" }, "Send a request to see how it routes."));
  $("#route-chart").replaceChildren();
  $("#route-caption").textContent = "";
  $("#support tbody").replaceChildren();
}

// ---------------------------------------------------------------- start

function start() {
  for (const tab of TABS) {
    $(`#tab-${tab}`).addEventListener("click", () => {
      history.replaceState(null, "", `#${tab}`);
      showTab(tab);
    });
  }
  $("#key-change").addEventListener("click", () => askForKey(null));
  $("#key-form").addEventListener("submit", useKey);
  $("#ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("#ask-input");
    const text = input.value;
    input.value = "";
    send(text);
  });
  $("#ask-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("#ask-form").requestSubmit();
    }
  });
  $("#ask-reset").addEventListener("click", resetConversation);
  onAuthFailure(askForKey);
  experts.bind();
  memory.bind();
  evaluation.bind();
  keyLabel();
  showTab(currentTab());
  // Ask for a key at once when the gateway needs one (and learn the experts for the forms).
  experts.load().then(() => {
    if (!storedKey()) $("#key-state").textContent = "no key needed (auth: none)";
  }).catch(() => {});
}

start();
