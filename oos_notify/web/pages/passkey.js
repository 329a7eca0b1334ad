"use strict";
// Passkeys for deciders: set one up from the enrolment page, and sign a decision on the
// decision page. The server sends WebAuthn options as JSON with base64url strings.
(function () {
  function bytes(text) {
    let b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    const raw = atob(b64);
    const out = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out.buffer;
  }

  function text(buffer) {
    let raw = "";
    for (const b of new Uint8Array(buffer)) raw += String.fromCharCode(b);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
      credentials: "same-origin",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(data.detail || "The service refused the request (" + response.status + ").");
    }
    return data;
  }

  function say(element, message) {
    element.textContent = message;
    element.hidden = false;
  }

  const enrol = document.getElementById("enrol-passkey");
  if (enrol) {
    enrol.addEventListener("click", async () => {
      const status = document.getElementById("passkey-status");
      enrol.disabled = true;
      try {
        const started = await post(location.pathname + "/options");
        const o = started.options;
        const created = await navigator.credentials.create({
          publicKey: {
            ...o,
            challenge: bytes(o.challenge),
            user: { ...o.user, id: bytes(o.user.id) },
            excludeCredentials: (o.excludeCredentials || []).map((c) => ({ ...c, id: bytes(c.id) })),
          },
        });
        const done = await post(location.pathname, {
          state: started.state,
          credential: {
            id: created.id,
            rawId: text(created.rawId),
            type: created.type,
            response: {
              clientDataJSON: text(created.response.clientDataJSON),
              attestationObject: text(created.response.attestationObject),
              transports: created.response.getTransports ? created.response.getTransports() : [],
            },
            clientExtensionResults: created.getClientExtensionResults(),
          },
        });
        say(status, done.message);
      } catch (error) {
        say(status, "Not set up: " + error.message);
        enrol.disabled = false;
      }
    });
  }

  const form = document.getElementById("decision-form");
  if (form) {
    form.addEventListener("submit", async (event) => {
      const chosen = form.querySelector("input[name=response]:checked");
      if (!chosen || chosen.dataset.signed !== "yes") return; // "please call us" is not signed
      event.preventDefault();
      const problem = document.getElementById("signing-problem");
      problem.hidden = true;
      try {
        const started = await post(location.pathname + "/signing", { response: chosen.value });
        const o = started.options;
        const asserted = await navigator.credentials.get({
          publicKey: {
            ...o,
            challenge: bytes(o.challenge),
            allowCredentials: (o.allowCredentials || []).map((c) => ({ ...c, id: bytes(c.id) })),
          },
        });
        form.elements.signing.value = started.signing;
        form.elements.assertion.value = JSON.stringify({
          id: asserted.id,
          rawId: text(asserted.rawId),
          type: asserted.type,
          response: {
            authenticatorData: text(asserted.response.authenticatorData),
            clientDataJSON: text(asserted.response.clientDataJSON),
            signature: text(asserted.response.signature),
            userHandle: asserted.response.userHandle ? text(asserted.response.userHandle) : null,
          },
          clientExtensionResults: {},
        });
        form.submit();
      } catch (error) {
        say(problem, "Not signed, nothing recorded: " + error.message);
      }
    });
  }
})();
