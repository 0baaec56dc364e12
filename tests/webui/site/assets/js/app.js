// A stand-in for the operators' UI: logs in over /api/v1/login and renders /api/v1/me.
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
  } catch (error) {
    document.getElementById("error").textContent = error.message;
  }
}

document.getElementById("route").textContent = window.location.pathname;
document.getElementById("login").addEventListener("submit", logIn);
