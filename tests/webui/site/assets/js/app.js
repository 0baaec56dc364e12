// A stand-in for the operators' UI: logs in over /api/v1/login, renders /api/v1/me, and runs
// commands over /api/v1/ws/commands the way the OpenRPort UI does (token kept in a cookie, passed
// as ?access_token=, wss:// when the page came over https).
"use strict";

async function api(path, options) {
  const response = await fetch("/api/v1" + path, options);
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.errors.map((e) => e.title).join("; "));
  }
  return body.data;
}

async function logIn(event) {
  event.preventDefault();
  const credentials = {
    username: document.getElementById("username").value,
    password: document.getElementById("password").value,
  };
  try {
    const login = await api("/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(credentials),
    });
    const me = await api("/me", { headers: { Authorization: "Bearer " + login.token } });
    document.getElementById("me-username").textContent = me.username;
    document.getElementById("me-groups").textContent = (me.groups || []).join(",");
    document.getElementById("me").hidden = false;
    document.cookie = "token=" + login.token + "; path=/; SameSite=Lax";
    document.getElementById("console").hidden = false;
  } catch (error) {
    document.getElementById("error").textContent = error.message;
  }
}

function cookieToken() {
  const entry = document.cookie.split("; ").find((c) => c.startsWith("token="));
  return entry ? entry.slice("token=".length) : "";
}

function runCommand(event) {
  event.preventDefault();
  const output = document.getElementById("console-output");
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${window.location.host}/api/v1/ws/commands?access_token=${cookieToken()}`;
  const socket = new WebSocket(url);
  socket.onopen = () => {
    socket.send(JSON.stringify({
      command: document.getElementById("command").value,
      client_ids: [document.getElementById("client").value],
      group_ids: [],
      timeout_sec: 30,
      execute_concurrently: true,
      is_sudo: false,
    }));
  };
  socket.onmessage = (message) => {
    const result = JSON.parse(message.data);
    if (result.status) {
      const text = result.result ? result.result.stdout : `${result.error}\n`;
      output.textContent += `${result.client_id} ${result.status}: ${text}`;
    }
  };
  socket.onerror = () => { output.textContent += "websocket error\n"; };
}

document.getElementById("route").textContent = window.location.pathname;
document.getElementById("login").addEventListener("submit", logIn);
document.getElementById("console").addEventListener("submit", runCommand);
