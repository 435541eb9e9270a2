// newsflow's page: jobs, newest articles, a create form, and live updates read from the
// server-sent event stream through fetch() (EventSource cannot send a bearer token).
"use strict";
(() => {
  const $ = (sel) => document.querySelector(sel);
  const TOKEN_KEY = "newsflow-token";
  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let detailJob = null;
  let lastEventId = null;
  const jobs = new Map();

  class Unauthorized extends Error {}

  async function api(path, options = {}) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(path, Object.assign({}, options, { headers }));
    if (response.status === 401) {
      askToken();
      throw new Unauthorized();
    }
    return response;
  }

  async function json(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.json();
  }

  function askToken() {
    const form = $("#token-form");
    if (!form.hidden) return;
    form.hidden = false;
    $("#live").textContent = "this server needs an API token";
    $("#token").focus();
  }

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  const time = (t) => (t ? new Date(t).toLocaleString() : "");

  function queryOf(job) {
    return Object.entries(job.params || {}).map(([k, v]) => k + "=" + v).join("&");
  }

  function button(label, action, id) {
    const b = el("button", label, { type: "button", "data-action": action, "data-job": id });
    b.setAttribute("aria-label", label + " " + id);
    return b;
  }

  function jobRow(job) {
    const tr = el("tr", null, { "data-job": job.id });
    const id = el("td");
    id.append(button(job.id, "show", job.id));
    const latest = job.latest_batch;
    tr.append(
      id,
      el("td", queryOf(job)),
      el("td", job.state, { "data-field": "state" }),
      el("td", job.worker ? job.worker.id : "—", { "data-field": "worker" }),
      el("td", latest ? time(latest.completed_at) + " · " + latest.article_count + " articles" : "—", { "data-field": "latest" }),
      el("td", time(job.next_run_at) || "—"),
      el("td", job.last_error ? job.last_error.code + ": " + job.last_error.message : "", { class: "err" }),
    );
    const actions = el("td");
    actions.append(
      button(job.state === "running" ? "Stop" : "Start", job.state === "running" ? "stop" : "start", job.id),
      button("Delete", "delete", job.id),
    );
    tr.append(actions);
    return tr;
  }

  function renderJobs() {
    const body = $("#jobs tbody");
    const rows = [...jobs.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map(jobRow);
    body.replaceChildren(...rows);
    $("#jobs-empty").hidden = jobs.size > 0;
    performance.mark("jobs-rendered");
  }

  function articleItem(article) {
    const li = el("li");
    const url = String(article.url || "");
    const title = /^https?:\/\//i.test(url)
      ? el("a", article.title || url, { href: url, rel: "noopener noreferrer" })
      : el("span", article.title || "");
    const meta = el("p", [article.source && article.source.name, time(article.published_at || article.fetched_at), article.job_id].filter(Boolean).join(" · "), { class: "meta" });
    li.append(title, meta);
    if (article.description) li.append(el("p", article.description));
    return li;
  }

  async function loadArticles() {
    const feed = await json("/articles?limit=20");
    $("#articles").replaceChildren(...feed.articles.map(articleItem));
  }

  async function loadJobs() {
    jobs.clear();
    let cursor = null;
    do {
      const page = await json("/jobs?limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
      for (const job of page.jobs) jobs.set(job.id, job);
      cursor = page.next_cursor;
    } while (cursor);
    renderJobs();
  }

  async function showJob(id) {
    detailJob = id;
    const section = $("#job-detail");
    section.hidden = false;
    $("#detail-title").textContent = "Job " + id;
    const [latest, batches] = await Promise.all([
      json("/jobs/" + encodeURIComponent(id) + "/articles?limit=50"),
      json("/jobs/" + encodeURIComponent(id) + "/batches?limit=20"),
    ]);
    $("#detail-articles").replaceChildren(...latest.articles.map(articleItem));
    $("#detail-batches tbody").replaceChildren(...batches.batches.map((b) => {
      const tr = el("tr", null, { "data-batch": b.id });
      tr.append(el("td", b.id), el("td", b.status), el("td", b.article_count), el("td", time(b.started_at)), el("td", time(b.completed_at)), el("td", b.error ? b.error.code + ": " + b.error.message : "", { class: "err" }));
      return tr;
    }));
  }

  async function act(action, id) {
    if (action === "show") return showJob(id);
    if (action === "delete" && !confirm("Delete job " + id + " and everything stored for it?")) return;
    const path = "/jobs/" + encodeURIComponent(id) + (action === "delete" ? "" : "/" + action);
    const response = await api(path, { method: action === "delete" ? "DELETE" : "POST" });
    if (action === "delete" && response.ok) {
      jobs.delete(id);
      renderJobs();
    } else if (response.ok) {
      jobs.set(id, await response.json());
      renderJobs();
    }
  }

  // The form's fields, longest first: a message naming `params.q` is about q, not params.
  const FIELDS = ["interval_secs", "keep_batches", "max_pages", "page_size", "endpoint", "pipeline", "params.q", "params", "id"];
  const fieldOf = (name) => (name === "params.q" ? "q" : name);

  function clearErrors() {
    for (const p of document.querySelectorAll("#create-form .error")) p.textContent = "";
    for (const i of document.querySelectorAll("#create-form [aria-invalid]")) i.removeAttribute("aria-invalid");
  }

  function showError(message) {
    // The API's message names the field at fault (`interval_secs is out of range: ...`).
    let best = null;
    for (const name of FIELDS) {
      const at = message.search(new RegExp("(^|[^a-z_.])" + name.replace(".", "\\.") + "($|[^a-z_])"));
      if (at >= 0 && (best === null || at < best.at)) best = { name, at };
    }
    if (best && best.name.startsWith("params.") && best.name !== "params.q") best = { name: "params" };
    const field = best ? fieldOf(best.name) : "form";
    $("#e-" + field).textContent = message;
    const input = $("#f-" + field);
    if (input) {
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  }

  function formBody(form) {
    const data = new FormData(form);
    const body = {};
    const params = {};
    for (const [k, v] of new URLSearchParams(String(data.get("params") || ""))) params[k] = v;
    if (String(data.get("q") || "") !== "") params.q = String(data.get("q"));
    body.params = params;
    if (data.get("id")) body.id = String(data.get("id"));
    body.endpoint = String(data.get("endpoint"));
    for (const name of ["interval_secs", "max_pages", "page_size", "keep_batches"]) {
      const raw = String(data.get(name) || "").trim();
      if (raw === "") continue;
      // A number when it reads as one; otherwise sent as typed, for the API to explain.
      body[name] = /^-?\d+$/.test(raw) ? Number(raw) : raw;
    }
    const pipeline = String(data.get("pipeline") || "").trim();
    if (pipeline !== "") {
      try {
        body.pipeline = JSON.parse(pipeline);
      } catch (error) {
        throw new Error("pipeline is not valid JSON: " + error.message);
      }
    }
    return body;
  }

  async function create(event) {
    event.preventDefault();
    clearErrors();
    const form = event.target;
    let request;
    try {
      request = formBody(form);
    } catch (error) {
      showError(error.message);
      return;
    }
    const response = await api("/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(request),
    });
    const body = await response.json();
    if (response.status === 201) {
      // The event stream may already have brought a newer view of it (its first batch).
      if (!jobs.has(body.id)) jobs.set(body.id, body);
      renderJobs();
      form.reset();
      const warnings = (body.warnings || []).map((w) => w.message).join("; ");
      $("#notice").textContent = "created job " + body.id + (warnings ? " (warning: " + warnings + ")" : "");
    } else {
      showError(body.error ? body.error.message : "the server answered " + response.status);
    }
  }

  function onEvent(kind, data) {
    if (kind === "job") {
      if (data.deleted) jobs.delete(data.id);
      else jobs.set(data.id, data);
      renderJobs();
    } else if (kind === "batch") {
      const job = jobs.get(data.job_id);
      const batch = data.batch;
      if (job && batch.status === "complete") {
        job.latest_batch = { id: batch.id, completed_at: batch.completed_at, article_count: batch.article_count };
        renderJobs();
      }
      if (batch.status === "complete") loadArticles().catch(report);
      if (detailJob === data.job_id) showJob(detailJob).catch(report);
    }
  }

  async function listen() {
    for (let delay = 500; ; delay = Math.min(delay * 2, 10000)) {
      try {
        const headers = lastEventId ? { "Last-Event-ID": lastEventId } : {};
        const response = await api("/events", { headers });
        if (!response.ok) throw new Error("events: " + response.status);
        $("#live").textContent = "live";
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let kind = "message", data = "", id = null;
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("event:")) kind = line.slice(6).trim();
              else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
            }
            if (id) lastEventId = id;
            if (data) onEvent(kind, JSON.parse(data));
          }
        }
      } catch (error) {
        if (error instanceof Unauthorized) return;
        report(error);
      }
      $("#live").textContent = "reconnecting…";
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }

  function report(error) {
    if (error instanceof Unauthorized) return;
    console.error(error);
  }

  async function start() {
    try {
      await Promise.all([loadJobs(), loadArticles()]);
      $("#token-form").hidden = true;
      listen();
    } catch (error) {
      report(error);
    }
  }

  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("#token").value;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  });
  $("#create-form").addEventListener("submit", (event) => create(event).catch(report));
  $("#jobs").addEventListener("click", (event) => {
    const target = event.target.closest("button[data-action]");
    if (target) act(target.dataset.action, target.dataset.job).catch(report);
  });
  start();
})();
