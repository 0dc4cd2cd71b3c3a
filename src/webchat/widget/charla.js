/*
 * Charla web chat widget. It speaks the contract of docs/webchat.md: REST under /api/chat and
 * live frames on /api/chat/ws. The server embeds this file (include_str!) and serves it at
 * /widget/charla.js. No build step, no dependencies, ES2018.
 *
 *   <script src="https://support.example.com/widget/charla.js"
 *           data-server="https://support.example.com" data-lang="es"></script>
 *   <script>CharlaChat.setToken(jwtFromYourLogin);</script>
 */
(function () {
  "use strict";

  if (window.CharlaChat) return; // loaded twice: the first copy keeps its state

  const MAX_CHARS = 500;
  const TYPING_THROTTLE_MS = 3000, TYPING_IDLE_MS = 5000, SUPPORT_TYPING_MS = 30000;
  const PING_MS = 25000, DEAD_MS = 60000, BACKOFF_MIN_MS = 1000, BACKOFF_MAX_MS = 30000;

  // Every user-visible text and aria-label, one object per language.
  const STRINGS = {
    es: {
      button: "Chat de soporte", buttonUnread: (n) => `Chat de soporte (${n} sin leer)`,
      unread: (n) => `${n} sin leer`, title: "Chat de soporte", closePanel: "Cerrar el panel del chat",
      loginRequired: "Inicia sesión en la tienda para chatear con soporte.",
      expired: "Tu sesión ha expirado. Inicia sesión de nuevo.",
      sessionLoading: "Cargando la conversación…", messagesLoading: "Cargando los mensajes…",
      isCreating: "Iniciando la conversación…", isClosing: "Terminando la conversación…",
      statusPending: "Esperando a un agente de soporte…", statusActive: "Estás hablando con soporte.",
      reconnecting: "Sin conexión en directo; reconectando…",
      liveUnavailable: "Las actualizaciones en directo no están disponibles.",
      typing: "Soporte está escribiendo…", messages: "Mensajes",
      empty: "Escribe tu consulta y el equipo de soporte te responderá aquí.",
      you: "Tú", support: "Soporte",
      sending: "Enviando", sent: "Enviado", read: "Leído", failed: "No enviado",
      retry: "Reintentar", retrySend: "Reintentar el envío",
      inputLabel: "Tu mensaje", placeholder: "Escribe un mensaje…",
      counter: (n) => `${n}/${MAX_CHARS}`, send: "Enviar",
      end: "Terminar conversación", endConfirm: "¿Seguro que quieres terminar la conversación?",
      endYes: "Sí, terminar", endNo: "Cancelar",
      ended: "La conversación ha terminado.", newConversation: "Iniciar una nueva conversación",
      tooLong: `El mensaje no puede superar los ${MAX_CHARS} caracteres.`,
      noSession: "No hay ninguna conversación abierta.",
      rateLimited: (s) => `Vas demasiado rápido. Vuelve a intentarlo en ${s} s.`,
      rateLimitedSoon: "Vas demasiado rápido. Espera un momento y vuelve a intentarlo.",
      network: "No se pudo conectar con el servidor. Comprueba tu conexión.",
      generic: "Ha ocurrido un error. Inténtalo de nuevo.",
    },
    en: {
      button: "Support chat", buttonUnread: (n) => `Support chat (${n} unread)`,
      unread: (n) => `${n} unread`, title: "Support chat", closePanel: "Close the chat panel",
      loginRequired: "Log in to the shop to chat with support.",
      expired: "Your session has expired. Please log in again.",
      sessionLoading: "Loading the conversation…", messagesLoading: "Loading messages…",
      isCreating: "Starting the conversation…", isClosing: "Ending the conversation…",
      statusPending: "Waiting for a support agent…", statusActive: "You are talking to support.",
      reconnecting: "Live connection lost; reconnecting…",
      liveUnavailable: "Live updates are unavailable.",
      typing: "Support is typing…", messages: "Messages",
      empty: "Write your question and the support team will answer here.",
      you: "You", support: "Support",
      sending: "Sending", sent: "Sent", read: "Read", failed: "Not sent",
      retry: "Retry", retrySend: "Retry sending",
      inputLabel: "Your message", placeholder: "Write a message…",
      counter: (n) => `${n}/${MAX_CHARS}`, send: "Send",
      end: "End conversation", endConfirm: "Do you really want to end the conversation?",
      endYes: "Yes, end it", endNo: "Cancel",
      ended: "The conversation has ended.", newConversation: "Start a new conversation",
      tooLong: `Messages cannot be longer than ${MAX_CHARS} characters.`,
      noSession: "There is no open conversation.",
      rateLimited: (s) => `You are going too fast. Try again in ${s} s.`,
      rateLimitedSoon: "You are going too fast. Wait a moment and try again.",
      network: "Could not reach the server. Check your connection.",
      generic: "Something went wrong. Please try again.",
    },
  };

  // document.currentScript is only set while this file first runs: read it now.
  const script = document.currentScript || document.querySelector('script[src*="charla.js"]');
  const SERVER = resolveServer();
  const WS_URL = SERVER.replace(/^http/i, "ws") + "/api/chat/ws";
  const LANG = resolveLang();
  const T = STRINGS[LANG];
  const timeFormat = new Intl.DateTimeFormat(LANG, { hour: "2-digit", minute: "2-digit" });
  const dayTimeFormat = new Intl.DateTimeFormat(LANG, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

  function resolveServer() {
    const attr = script && script.getAttribute("data-server");
    try {
      if (!attr) return new URL(script.src, location.href).origin;
      const u = new URL(attr, location.href);
      return (u.origin + u.pathname).replace(/\/+$/, ""); // a path prefix, if given, is kept
    } catch (e) {
      return location.origin;
    }
  }

  function resolveLang() {
    const raw = (script && script.getAttribute("data-lang")) || document.documentElement.lang || navigator.language || "en";
    return /^es(?:[-_]|$)/i.test(raw.trim()) ? "es" : "en";
  }

  // ---- State ---------------------------------------------------------------------------------

  const state = {
    token: null, sub: null,
    generation: 0, // bumped when the customer changes: late answers for the previous one are dropped
    expired: false, // after a 401 or a 4001 close nothing works until setToken
    open: false,
    session: null, // the ChatSession shown, without its messages
    entries: [], // messages in timestamp-then-arrival order: {key, id, seq, data, status, el, parts}
    loading: { sessionLoading: false, messagesLoading: false, isCreating: false, isSending: false, isClosing: false },
    errors: { session: null, messages: null, send: null },
    confirmEnd: false, supportTyping: false,
  };
  const byId = new Map(); // server message id -> entry
  const retryActions = { session: null, messages: null, send: null };
  const sendQueue = []; // optimistic entries waiting for their POST
  let inFlight = null; // the entry whose POST is under way
  let seq = 0, localSeq = 0;
  let markReadBusy = false, refreshing = false, refreshAgain = false;
  let supportTypingTimer = null, stickToBottom = true, ui = null;
  const pending = []; // API calls made before the DOM was ready

  const live = {
    ws: null, state: "idle", cursor: null, sentSince: false, delay: BACKOFF_MIN_MS,
    reconnectTimer: null, pingTimer: null, lastFrameAt: 0,
  };
  const typingOut = { active: false, lastSent: 0, idleTimer: null };

  // ---- REST ----------------------------------------------------------------------------------

  function apiError(status, message) {
    return Object.assign(new Error(message), { status });
  }

  /** Calls the API, unwraps the {success, data, message} envelope, throws readable errors. */
  async function api(method, path, body) {
    const token = state.token, generation = state.generation;
    const headers = { Authorization: "Bearer " + token, Accept: "application/json" };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res, env = null;
    try {
      res = await fetch(SERVER + path, init);
    } catch (e) {
      throw apiError(0, T.network);
    }
    try { env = await res.json(); } catch (e) { /* not JSON: a proxy's error page */ }
    if (generation !== state.generation) throw apiError(-1, ""); // another customer now: say nothing
    if (res.ok && env && env.success !== false) return env.data === undefined ? null : env.data;
    if (res.status === 401) {
      if (token === state.token) expire(); // unless a fresh token arrived meanwhile
      throw apiError(401, T.expired);
    }
    if (res.status === 429) {
      const secs = parseInt(res.headers.get("Retry-After") || "", 10);
      throw apiError(429, secs > 0 ? T.rateLimited(secs) : T.rateLimitedSoon);
    }
    throw apiError(res.status, serverMessage(res.status, env) || T.generic);
  }

  /** The server's words: `message` is a string, or on 400 an array, errors.message[0] first. */
  function serverMessage(status, env) {
    if (!env) return null;
    const first = (v) => (Array.isArray(v) ? v[0] : v);
    let m = first(env.message);
    if (status === 400 && env.errors && typeof env.errors === "object") {
      m = first(env.errors.message) || first(Object.values(env.errors)[0]) || m;
    }
    return typeof m === "string" && m ? m : null;
  }

  const canTalk = () => !!state.token && !state.expired;
  const isOpenSession = () => !!state.session && state.session.status !== "closed";
  const sessionPath = (what) => `/api/chat/session/${encodeURIComponent(state.session.id)}/${what}`;

  // ---- Sessions ------------------------------------------------------------------------------

  /** Shows the ChatSession `s`; a different session replaces what is on screen. */
  function applySession(s, quiet) {
    if (!s || !s.id) return;
    if (!state.session || state.session.id !== s.id) {
      clearMessages();
      setSupportTyping(false);
      state.confirmEnd = false;
    }
    state.session = { id: s.id, userId: s.userId, status: s.status, createdAt: s.createdAt, lastMessageAt: s.lastMessageAt };
    if (Array.isArray(s.messages)) addMessages(s.messages, quiet);
    render();
  }

  function setSessionStatus(status) {
    if (!state.session) return;
    state.session.status = status;
    if (status === "closed") {
      setSupportTyping(false);
      stopTyping();
      state.confirmEnd = false;
    }
    render();
  }

  /** Runs `fn` with the loading flag `key` raised; a failure goes to the error region `kind`.
   * Resolves to fn's result, or undefined when it failed. */
  async function task(key, kind, fn, retry) {
    setError(kind, null);
    setLoading(key, true);
    try {
      return await fn();
    } catch (e) {
      setError(kind, e.message, retry);
    } finally {
      setLoading(key, false);
    }
  }

  const ACTIVE = "/api/chat/session/active";

  /** Opening the panel: show the active session, or start one (the seed's user flow). */
  async function ensureSession() {
    if (!canTalk() || state.loading.sessionLoading || state.loading.isCreating) return;
    const before = state.session && state.session.id;
    const s = await task("sessionLoading", "session", () => api("GET", ACTIVE), ensureSession);
    if (s) {
      applySession(s, true);
      if (!Array.isArray(s.messages)) loadMessages();
    } else if (s === null && state.session && state.session.id === before) {
      setSessionStatus("closed"); // the one on screen is no longer open: it ended while we were away
    } else if (s === null && !state.session) {
      createSession();
    }
  }

  async function createSession() {
    if (!canTalk() || state.loading.isCreating) return;
    // 409: one exists already (another tab made it): show that one.
    const create = () => api("POST", "/api/chat/session").catch((e) => (e.status === 409 ? api("GET", ACTIVE) : Promise.reject(e)));
    const s = await task("isCreating", "session", create, createSession);
    if (s) applySession(s, true);
  }

  async function loadMessages() {
    if (!state.session || !canTalk()) return;
    const id = state.session.id;
    const list = await task("messagesLoading", "messages", () => api("GET", sessionPath("messages")), loadMessages);
    if (Array.isArray(list) && state.session && state.session.id === id) addMessages(list, true);
  }

  async function endSession() {
    if (!state.session || !canTalk() || state.loading.isClosing) return;
    const id = state.session.id;
    state.confirmEnd = false;
    const done = await task("isClosing", "session", () => api("PATCH", sessionPath("close")).then(() => true));
    if (done && state.session && state.session.id === id) setSessionStatus("closed");
    focusFirst();
  }

  /** A live frame named a session we do not show (made in another tab, or ours ended): ask. */
  function refreshActive() {
    if (!canTalk()) return;
    if (refreshing) { refreshAgain = true; return; }
    refreshing = true;
    const before = state.session && state.session.id;
    api("GET", ACTIVE)
      .then((s) => {
        if (s) applySession(s, false);
        else if (state.session && state.session.id === before) setSessionStatus("closed");
      })
      .catch(() => { /* the next frame, or opening the panel, asks again */ })
      .finally(() => {
        refreshing = false;
        if (refreshAgain) { refreshAgain = false; refreshActive(); }
      });
  }

  /** While the customer can see them, marks support messages read (and so clears the badge). */
  async function maybeMarkRead() {
    if (!state.open || document.visibilityState === "hidden" || markReadBusy || !state.session || !canTalk()) return;
    const unread = state.entries.filter(isUnread);
    if (!unread.length) return;
    markReadBusy = true;
    const ok = await api("PATCH", sessionPath("mark-read")).then(() => true, () => false);
    markReadBusy = false;
    // A failure is not worth an alert: the badge stays and the next support message tries again.
    if (ok) unread.forEach((e) => { e.data.isRead = true; });
    render();
    if (ok) maybeMarkRead(); // those that arrived during the call
  }

  // ---- Messages ------------------------------------------------------------------------------

  const isUnread = (e) => !!e.id && e.data.sender === "support" && !e.data.isRead;
  const statusOf = (m) => (m.sender === "user" ? (m.isRead ? "read" : "sent") : null);
  const timeOf = (e) => Date.parse(e.data.timestamp) || 0;
  const compare = (a, b) => timeOf(a) - timeOf(b) || a.seq - b.seq;

  /** Adds or updates a server message: one entry per id. */
  function upsertMessage(msg) {
    if (!msg || !msg.id) return;
    let entry = byId.get(msg.id);
    // The live frame for our own message can beat the POST's answer: it is the one in flight.
    if (!entry && msg.sender === "user" && inFlight && !inFlight.id && inFlight.data.message === msg.message) {
      entry = inFlight;
      entry.id = msg.id;
      byId.set(msg.id, entry);
    }
    if (entry) {
      // isRead only goes from false to true: a replayed frame must not undo a read.
      const wasRead = !!entry.data.id && entry.data.isRead;
      entry.data = Object.assign({}, msg, { isRead: !!(msg.isRead || wasRead) });
      entry.status = statusOf(entry.data);
    } else {
      entry = { key: msg.id, id: msg.id, seq: ++seq, data: Object.assign({}, msg), status: statusOf(msg) };
      byId.set(msg.id, entry);
    }
    showEntry(entry);
  }

  function addMessages(list, quiet) {
    // A backlog put into the live region would be read out one message after another.
    if (quiet) ui.list.setAttribute("aria-live", "off");
    list.forEach(upsertMessage);
    if (quiet) setTimeout(() => ui.list.setAttribute("aria-live", "polite"), 250);
    maybeMarkRead();
  }

  /** Renders the entry, then puts it in order, moving its node only when it is out of order. */
  function showEntry(entry) {
    renderEntry(entry);
    const list = state.entries;
    const i = list.indexOf(entry);
    if (i >= 0) {
      const prev = list[i - 1], next = list[i + 1];
      // A moved node is announced again by screen readers.
      if ((!prev || compare(prev, entry) <= 0) && (!next || compare(entry, next) <= 0)) return;
      list.splice(i, 1);
    }
    let j = list.findIndex((e) => compare(entry, e) < 0);
    if (j < 0) j = list.length;
    list.splice(j, 0, entry);
    ui.list.insertBefore(entry.el, list[j + 1] ? list[j + 1].el : null);
    if (stickToBottom) scrollToBottom();
  }

  function removeEntry(entry) {
    const i = state.entries.indexOf(entry);
    if (i >= 0) state.entries.splice(i, 1);
    if (entry.id && byId.get(entry.id) === entry) byId.delete(entry.id);
    if (entry.el) entry.el.remove();
    entry.removed = true;
  }

  function clearMessages() {
    state.entries.slice().forEach(removeEntry);
    sendQueue.length = 0;
  }

  function submitMessage() {
    const text = ui.input.value.trim();
    if (!text || !canTalk()) return; // empty or whitespace only: not sent
    if (Array.from(text).length > MAX_CHARS) return setError("send", T.tooLong); // characters, not UTF-16 units
    if (!isOpenSession()) return setError("send", T.noSession);
    setError("send", null);
    const entry = {
      key: "local-" + ++localSeq, id: null, seq: ++seq, status: "sending",
      data: { id: null, sessionId: state.session.id, message: text, sender: "user", timestamp: new Date().toISOString(), isRead: false },
    };
    stickToBottom = true;
    ui.input.value = "";
    updateCounter();
    stopTyping();
    enqueue(entry);
  }

  function enqueue(entry) {
    entry.status = "sending";
    showEntry(entry);
    sendQueue.push(entry);
    pumpQueue();
  }

  /** POSTs queued messages one at a time, so they reach support in the order they were written. */
  async function pumpQueue() {
    if (inFlight || !sendQueue.length) return;
    const entry = (inFlight = sendQueue.shift());
    setLoading("isSending", true);
    try {
      confirmLocal(entry, await api("POST", "/api/chat/message", { message: entry.data.message }));
    } catch (e) {
      if (!entry.removed && !entry.id) {
        entry.status = "failed";
        renderEntry(entry);
      }
      setError("send", e.message);
      // Without a valid token the rest would fail the same way: fail them now.
      if (!canTalk()) sendQueue.splice(0).forEach((q) => { q.status = "failed"; renderEntry(q); });
    } finally {
      inFlight = null;
      setLoading("isSending", false);
      pumpQueue();
    }
  }

  /** The POST answered with the stored message: the optimistic entry becomes it. */
  function confirmLocal(entry, msg) {
    if (entry.removed || !msg || !msg.id) return;
    if (!entry.id) {
      if (byId.has(msg.id)) removeEntry(entry); // a live frame showed it already
      else { entry.id = msg.id; byId.set(msg.id, entry); }
    }
    upsertMessage(msg);
  }

  function retrySend(entry) {
    if (!canTalk() || !isOpenSession() || entry.status !== "failed") return;
    setError("send", null);
    enqueue(entry);
    ui.input.focus(); // the retry button is gone: keep the focus somewhere useful
  }

  // ---- Typing --------------------------------------------------------------------------------

  /** Tells support the customer is typing: at most every 3 s, and that they stopped after 5 s idle. */
  function onInputTyping() {
    if (!isOpenSession()) return;
    if (!ui.input.value.trim()) return stopTyping();
    const now = Date.now();
    if ((!typingOut.active || now - typingOut.lastSent >= TYPING_THROTTLE_MS) && sendFrame({ type: "typing", typing: true })) {
      typingOut.active = true;
      typingOut.lastSent = now;
    }
    clearTimeout(typingOut.idleTimer);
    typingOut.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(typingOut.idleTimer);
    if (!typingOut.active) return;
    typingOut.active = false;
    sendFrame({ type: "typing", typing: false });
  }

  /** The agent's typing indicator; it is not renewed by the server, so it lapses after 30 s. */
  function setSupportTyping(on) {
    clearTimeout(supportTypingTimer);
    if (on) supportTypingTimer = setTimeout(() => setSupportTyping(false), SUPPORT_TYPING_MS);
    if (state.supportTyping === on) return;
    state.supportTyping = on;
    render();
  }

  // ---- Live channel --------------------------------------------------------------------------

  function sendFrame(frame) {
    const ws = live.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || live.state !== "open") return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  function setLive(name) {
    live.state = name;
    render();
  }

  function connectLive() {
    clearTimeout(live.reconnectTimer);
    if (!canTalk() || live.ws) return;
    let ws;
    try { ws = new WebSocket(WS_URL); } catch (e) { return scheduleReconnect(); }
    live.ws = ws;
    let sentToken = null;
    if (live.state !== "reconnecting") setLive("connecting");
    ws.onopen = () => {
      // A token in a URL ends up in logs: it travels in the first frame instead.
      sentToken = state.token;
      const auth = { type: "auth", token: sentToken };
      live.sentSince = !!live.cursor;
      if (live.cursor) auth.since = live.cursor;
      ws.send(JSON.stringify(auth));
      live.lastFrameAt = Date.now();
      clearInterval(live.pingTimer);
      live.pingTimer = setInterval(ping, PING_MS);
    };
    ws.onmessage = (ev) => {
      if (ws !== live.ws) return;
      live.lastFrameAt = Date.now();
      let frame = null;
      try { frame = JSON.parse(ev.data); } catch (e) { /* not ours */ }
      if (frame && typeof frame === "object") handleFrame(frame);
    };
    ws.onclose = (ev) => {
      if (ws !== live.ws) return; // one we dropped on purpose
      live.ws = null;
      clearInterval(live.pingTimer);
      if (ev.code === 4001 && sentToken && sentToken !== state.token) {
        connectLive(); // the token it authenticated with expired, but setToken gave a fresh one
      } else if (ev.code === 4001) {
        expire(); // bad or expired token: wait for setToken
        setError("session", T.expired);
      } else if (ev.code === 4003) {
        setLive("unavailable"); // this page's origin is not allowed: retrying cannot help
      } else {
        scheduleReconnect(); // 4008, 1001 and the rest: come back with `since`
      }
    };
    ws.onerror = () => { /* onclose follows and decides */ };
  }

  function scheduleReconnect() {
    clearTimeout(live.reconnectTimer);
    setLive("reconnecting");
    const delay = live.delay * (0.8 + Math.random() * 0.4); // jitter: tabs do not all come back at once
    live.delay = Math.min(live.delay * 2, BACKOFF_MAX_MS);
    live.reconnectTimer = setTimeout(connectLive, delay);
  }

  /** Closes the socket on purpose (its onclose is then ignored) and stops reconnecting. */
  function stopLive(name) {
    clearTimeout(live.reconnectTimer);
    clearInterval(live.pingTimer);
    const ws = live.ws;
    live.ws = null;
    if (ws) { try { ws.close(1000); } catch (e) { /* closing already */ } }
    setLive(name);
  }

  function ping() {
    if (!live.ws || live.ws.readyState !== WebSocket.OPEN) return;
    if (Date.now() - live.lastFrameAt > DEAD_MS) {
      // No pong for a minute: the connection is dead though the browser has not noticed.
      stopLive("reconnecting");
      return scheduleReconnect();
    }
    live.ws.send('{"type":"ping"}');
  }

  function handleFrame(f) {
    const d = f.data || {};
    const current = state.session && state.session.id;
    switch (f.type) {
      case "ready":
        live.delay = BACKOFF_MIN_MS;
        setLive("open");
        if (f.session) applySession(f.session, !live.sentSince);
        // No session now, yet one is on screen as open: ask whether it ended.
        else if (!live.sentSince && isOpenSession()) refreshActive();
        break;
      case "message":
        if (d.sessionId !== current) { refreshActive(); break; }
        upsertMessage(d);
        if (d.sender === "support") { setSupportTyping(false); maybeMarkRead(); }
        render();
        break;
      case "session":
        if (d.id === current) setSessionStatus(d.status);
        else if (d.status !== "closed") refreshActive();
        break;
      case "read":
        if (d.sessionId === current) markReadUpTo(d.messageId);
        break;
      case "typing":
        if (!current || d.sessionId === current) setSupportTyping(!!d.typing && isOpenSession());
        break;
      default:
        break; // pong, and frames from a newer server
    }
    if (f.cursor != null) live.cursor = String(f.cursor);
  }

  /** Support read the customer's messages up to and including `messageId`, in timestamp order. */
  function markReadUpTo(messageId) {
    const target = byId.get(messageId);
    if (!target) return;
    for (const e of state.entries) {
      if (e.id && e.data.sender === "user" && !e.data.isRead) {
        e.data.isRead = true;
        e.status = "read";
        renderEntry(e);
      }
      if (e === target) break;
    }
  }

  function expire() {
    state.expired = true;
    stopTyping();
    stopLive("expired");
  }

  /** The `sub` of a JWT's payload, read (not verified) only to notice a different customer. */
  function jwtSub(token) {
    try {
      const p = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const sub = JSON.parse(atob(p + "=".repeat((4 - (p.length % 4)) % 4))).sub;
      return sub == null ? null : String(sub);
    } catch (e) {
      return null;
    }
  }

  function setToken(jwt) {
    const token = typeof jwt === "string" && jwt.trim() ? jwt.trim() : null;
    const sub = token ? jwtSub(token) : null;
    if (!token || !state.token || sub !== state.sub) {
      // Another customer (or none): nothing of the previous conversation may stay on screen.
      state.generation++;
      stopLive("idle");
      stopTyping();
      clearMessages();
      setSupportTyping(false);
      state.session = null;
      state.confirmEnd = false;
      live.cursor = null;
    }
    state.token = token;
    state.sub = sub;
    state.expired = false;
    Object.keys(state.errors).forEach((k) => setError(k, null));
    if (!token) return;
    live.delay = BACKOFF_MIN_MS;
    connectLive(); // a socket already open stays: it is authenticated
    if (state.open) ensureSession();
  }

  // ---- DOM -----------------------------------------------------------------------------------

  /** Creates an element. `text` sets textContent (never HTML); `on…` adds a listener. */
  function h(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (v === false || v == null) return;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : v);
    });
    (children || []).forEach((c) => node.append(c));
    return node;
  }

  function chatIcon() {
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    const path = document.createElementNS(NS, "path");
    [["viewBox", "0 0 24 24"], ["aria-hidden", "true"], ["focusable", "false"], ["class", "charla-icon"]]
      .forEach(([k, v]) => svg.setAttribute(k, v));
    path.setAttribute("d", "M4 3h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H10l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z");
    path.setAttribute("fill", "currentColor");
    svg.append(path);
    return svg;
  }

  function injectStylesheet(root) {
    // Invisible until styled, so the host page never flashes raw controls.
    root.style.visibility = "hidden";
    const shown = () => { root.style.visibility = ""; };
    const link = h("link", { rel: "stylesheet", href: SERVER + "/widget/charla.css", onload: shown, onerror: shown });
    setTimeout(shown, 3000);
    document.head.append(link);
  }

  /** An error region of the seed's error states (session, messages, send) with its retry button. */
  function errorRow(kind) {
    const text = h("div", { id: `charla-chat-${kind}-error`, class: "charla-error", role: "alert", "data-error": kind });
    const retry = h("button", { type: "button", class: "charla-error-retry", hidden: true, text: T.retry,
      onclick: () => retryActions[kind] && retryActions[kind]() });
    return { row: h("div", { class: "charla-error-row" }, [text, retry]), text, retry };
  }

  function buildUI() {
    const root = h("div", { id: "charla-chat-root", class: "charla-root", lang: LANG });
    injectStylesheet(root);
    const u = {};
    u.badge = h("span", { class: "charla-badge", hidden: true });
    u.button = h("button", { id: "charla-chat-button", class: "charla-button", type: "button", "aria-expanded": "false",
      "aria-controls": "charla-chat-panel", "aria-label": T.button, onclick: () => (state.open ? closePanel() : openPanel()) },
    [chatIcon(), u.badge]);
    u.close = h("button", { id: "charla-chat-close", class: "charla-icon-button", type: "button", "aria-label": T.closePanel,
      onclick: () => closePanel() }, [h("span", { "aria-hidden": "true", text: "×" })]);
    u.status = h("p", { id: "charla-chat-status", class: "charla-status", role: "status" });
    u.loading = h("p", { id: "charla-chat-loading", class: "charla-loading", role: "status" });
    u.auth = h("p", { id: "charla-chat-auth", class: "charla-auth", hidden: true, text: T.loginRequired });
    u.errors = { session: errorRow("session"), messages: errorRow("messages"), send: errorRow("send") };
    u.empty = h("p", { id: "charla-chat-empty", class: "charla-empty", hidden: true, text: T.empty });
    u.list = h("ol", { id: "charla-chat-messages", class: "charla-messages", "aria-live": "polite",
      "aria-relevant": "additions", "aria-label": T.messages });
    u.body = h("div", { class: "charla-body" }, [u.empty, u.list]);
    u.body.addEventListener("scroll", () => {
      stickToBottom = u.body.scrollHeight - u.body.scrollTop - u.body.clientHeight < 80;
    });
    u.typing = h("div", { id: "charla-chat-typing", class: "charla-typing", hidden: true }, [
      h("span", { class: "charla-dots", "aria-hidden": "true" }, [h("span"), h("span"), h("span")]),
      h("span", { text: T.typing }),
    ]);
    u.newConversation = h("button", { id: "charla-chat-new", class: "charla-primary", type: "button",
      text: T.newConversation, onclick: () => createSession().then(focusFirst) });
    u.ended = h("div", { id: "charla-chat-ended", class: "charla-ended", hidden: true }, [h("p", { text: T.ended }), u.newConversation]);

    u.input = h("textarea", { id: "charla-chat-input", class: "charla-input", maxlength: String(MAX_CHARS), rows: "2",
      placeholder: T.placeholder, "aria-describedby": "charla-chat-counter" });
    u.input.addEventListener("keydown", (e) => {
      // Enter sends, Shift+Enter is a newline; not while an IME is composing a character.
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        submitMessage();
      }
    });
    u.input.addEventListener("input", () => { updateCounter(); onInputTyping(); });
    u.counter = h("span", { id: "charla-chat-counter", class: "charla-counter", text: T.counter(0) });
    u.send = h("button", { id: "charla-chat-send", class: "charla-primary", type: "submit", text: T.send });
    u.form = h("form", { id: "charla-chat-form", class: "charla-form", novalidate: true,
      onsubmit: (e) => { e.preventDefault(); submitMessage(); } }, [
      h("label", { for: "charla-chat-input", class: "charla-visually-hidden", text: T.inputLabel }),
      u.input, h("div", { class: "charla-form-row" }, [u.counter, u.send]),
    ]);

    const askEnd = (on) => { state.confirmEnd = on; render(); (on ? u.endNo : u.end).focus(); };
    u.end = h("button", { id: "charla-chat-end", class: "charla-link-button", type: "button", text: T.end, onclick: () => askEnd(true) });
    u.endYes = h("button", { id: "charla-chat-end-yes", class: "charla-danger", type: "button", text: T.endYes, onclick: () => endSession() });
    u.endNo = h("button", { id: "charla-chat-end-no", class: "charla-secondary", type: "button", text: T.endNo, onclick: () => askEnd(false) });
    u.confirm = h("div", { id: "charla-chat-end-confirm", class: "charla-confirm", role: "group",
      "aria-labelledby": "charla-chat-end-question", hidden: true },
    [h("p", { id: "charla-chat-end-question", text: T.endConfirm }), u.endYes, u.endNo]);

    u.panel = h("section", { id: "charla-chat-panel", class: "charla-panel", role: "dialog",
      "aria-labelledby": "charla-chat-title", hidden: true }, [
      h("header", { class: "charla-header" }, [h("h2", { id: "charla-chat-title", class: "charla-title", text: T.title }), u.close]),
      u.status, u.loading, u.auth, u.errors.session.row, u.body, u.typing, u.errors.messages.row, u.ended,
      u.form, u.errors.send.row, h("div", { class: "charla-footer" }, [u.end, u.confirm]),
    ]);

    root.addEventListener("keydown", (e) => {
      if (e.key !== "Escape" || !state.open) return;
      e.preventDefault();
      if (state.confirmEnd) askEnd(false); // Escape first backs out of the question
      else closePanel();
    });
    document.addEventListener("visibilitychange", () => maybeMarkRead());
    window.addEventListener("online", () => { // the network is back: skip the rest of the backoff
      if (live.state === "reconnecting" && !live.ws) { live.delay = BACKOFF_MIN_MS; connectLive(); }
    });

    root.append(u.panel, u.button);
    document.body.append(root);
    ui = u;
    render();
  }

  function updateCounter() {
    const n = Array.from(ui.input.value).length; // characters, not UTF-16 units
    setText(ui.counter, T.counter(n));
    ui.counter.classList.toggle("charla-counter-over", n > MAX_CHARS);
  }

  const MARKS = { sending: "…", sent: "✓", read: "✓✓", failed: "!" };

  function renderEntry(entry) {
    if (!entry.el) {
      const p = (entry.parts = {
        who: h("span", { class: "charla-visually-hidden" }),
        text: h("p", { class: "charla-msg-text" }),
        time: h("time", { class: "charla-msg-time" }),
      });
      p.meta = h("div", { class: "charla-msg-meta" }, [p.time]);
      entry.el = h("li", { class: "charla-msg" }, [p.who, p.text, p.meta]);
    }
    const { el, parts, data: d } = entry;
    const mine = d.sender === "user";
    el.dataset.id = entry.id || entry.key; // local-<n> until the server gives the id
    el.dataset.sender = mine ? "user" : "support";
    setText(parts.who, (mine ? T.you : T.support) + ": ");
    setText(parts.text, d.message); // text, never HTML
    parts.time.dateTime = d.timestamp;
    setText(parts.time, formatTime(d.timestamp));
    if (!mine) return;
    if (!parts.mark) parts.meta.append((parts.mark = h("span", { class: "charla-msg-status", role: "img" })));
    const status = entry.status || "sent";
    parts.mark.dataset.status = status;
    parts.mark.setAttribute("aria-label", T[status]);
    setText(parts.mark, MARKS[status]);
    if (status === "failed" && !parts.retry) {
      parts.retry = h("button", { type: "button", class: "charla-msg-retry", text: T.retry, "aria-label": T.retrySend,
        onclick: () => retrySend(entry) });
      parts.meta.append(parts.retry);
    } else if (status !== "failed" && parts.retry) {
      parts.retry.remove();
      parts.retry = null;
    }
  }

  function formatTime(iso) {
    const d = new Date(iso);
    if (isNaN(d.getTime())) return "";
    return (d.toDateString() === new Date().toDateString() ? timeFormat : dayTimeFormat).format(d);
  }

  function setText(node, text) {
    if (node.textContent !== text) node.textContent = text; // unchanged text is not announced again
  }

  function setLoading(key, on) {
    state.loading[key] = on;
    render();
  }

  function setError(kind, message, retry) {
    state.errors[kind] = message || null;
    retryActions[kind] = message && retry ? retry : null;
    render();
  }

  /** Brings every control in line with the state; cheap enough to run after any change. */
  function render() {
    if (!ui) return;
    const s = state.session, st = s ? s.status : "none", closed = st === "closed", talk = canTalk();
    const hadFocus = ui.panel.contains(document.activeElement);

    const unread = state.open ? 0 : state.entries.filter(isUnread).length;
    ui.button.setAttribute("aria-expanded", String(state.open));
    ui.button.setAttribute("aria-label", unread ? T.buttonUnread(unread) : T.button);
    setText(ui.badge, String(unread));
    ui.badge.setAttribute("aria-label", T.unread(unread));
    ui.badge.hidden = unread === 0;

    ui.panel.hidden = !state.open;
    // Opening the dialog reads out why nothing works before login.
    ui.panel.setAttribute("aria-describedby", state.token ? "charla-chat-status" : "charla-chat-auth");
    ui.panel.dataset.sessionStatus = st;
    ui.panel.dataset.connection = live.state;
    const busy = Object.keys(state.loading).filter((k) => state.loading[k]);
    ui.panel.dataset.loading = busy.join(" ");
    const blocking = busy.filter((k) => k !== "isSending"); // sending shows on its message and the button
    const loadingList = state.loading.sessionLoading || state.loading.messagesLoading || state.loading.isCreating;
    ui.list.setAttribute("aria-busy", String(loadingList));
    setText(ui.loading, blocking.length ? T[blocking[0]] : "");

    let status = st === "pending" ? T.statusPending : st === "active" ? T.statusActive : "";
    if (live.state === "reconnecting") status += " " + T.reconnecting;
    if (live.state === "unavailable") status += " " + T.liveUnavailable;
    setText(ui.status, talk ? status.trim() : "");
    ui.auth.hidden = !!state.token;

    Object.keys(ui.errors).forEach((k) => {
      setText(ui.errors[k].text, state.errors[k] || "");
      ui.errors[k].retry.hidden = !(state.errors[k] && retryActions[k]);
    });

    ui.empty.hidden = !s || closed || state.entries.length > 0;
    ui.typing.hidden = !(state.supportTyping && !closed);
    ui.ended.hidden = !(closed && talk);
    ui.newConversation.disabled = state.loading.isCreating;
    ui.form.hidden = closed || !state.token;
    ui.input.disabled = !talk;
    ui.send.disabled = !talk || !s || closed;
    ui.send.setAttribute("aria-busy", String(state.loading.isSending));
    ui.end.hidden = !s || closed || !talk || state.confirmEnd;
    ui.end.disabled = state.loading.isClosing;
    ui.confirm.hidden = !(state.confirmEnd && s && !closed && talk);
    ui.endYes.disabled = state.loading.isClosing;

    // A control that just disappeared took the focus with it: put the focus somewhere useful.
    const active = document.activeElement;
    if (state.open && hadFocus && (!ui.panel.contains(active) || !shown(active))) focusFirst();
  }

  const shown = (node) => !node.closest("[hidden]");

  function focusFirst() {
    if (!state.open) return;
    const target = [ui.input, ui.newConversation, ui.close].find((c) => !c.disabled && shown(c));
    (target || ui.close).focus();
  }

  function scrollToBottom() {
    ui.body.scrollTop = ui.body.scrollHeight;
  }

  function openPanel() {
    if (state.open) return;
    state.open = true;
    state.confirmEnd = false;
    stickToBottom = true;
    render();
    scrollToBottom();
    focusFirst();
    maybeMarkRead();
    if (canTalk()) ensureSession();
  }

  function closePanel() {
    if (!state.open) return;
    stopTyping();
    state.open = false;
    state.confirmEnd = false;
    render();
    ui.button.focus();
  }

  // ---- Start ---------------------------------------------------------------------------------

  function whenReady(fn) {
    if (ui) fn();
    else pending.push(fn);
  }

  window.CharlaChat = Object.freeze({
    setToken: (jwt) => whenReady(() => setToken(jwt)),
    open: () => whenReady(openPanel),
    close: () => whenReady(closePanel),
  });

  function boot() {
    buildUI();
    pending.splice(0).forEach((fn) => fn());
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
  else boot();
})();
