// HQ console sign-in: posts the name and password, then reloads / (which is the console once the
// session cookie is set). Served with a CSP that allows only HQ's own scripts.
const form = document.getElementById("login-form");
const err = document.getElementById("login-error");
form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.textContent = "";
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const r = await fetch("/hq/v1/session", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ name: form.name.value, password: form.password.value }),
    });
    if (r.ok) {
      location.replace("/");
      return;
    }
    const body = await r.json().catch(() => null);
    err.textContent = r.status === 401 ? "Wrong name or password." : ((body && body.error && body.error.message) || `Sign-in failed (${r.status}).`);
  } catch {
    err.textContent = "HQ cannot be reached. Check the network and try again.";
  } finally {
    button.disabled = false;
  }
});
document.getElementById("name").focus();
