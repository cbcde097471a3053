/* The incident page: never lose typed input, and show what others change while it is open.
 * Plain JavaScript, no framework; the server renders every piece of HTML (see admin_incident_page.py). */
(function () {
  "use strict";

  // ---- 1. Typed input is never thrown away without asking ----
  // Leaving the page (any button, link or reload) while a form other than the one being sent holds
  // unsent input asks first. The composer's note travels with every action button, so those are safe.
  let sending = null;
  function guardedForms() {
    const forms = Array.from(document.querySelectorAll("form[data-guard]"));
    const edit = document.getElementById("incident_form");
    if (edit) forms.push(edit);
    return forms;
  }
  function changed(el, nonEmpty) {
    if (el.disabled || !el.name || ["hidden", "submit", "button", "file"].includes(el.type)) return false;
    if (el.name === "csrfmiddlewaretoken" || el.name.endsWith("TOTAL_FORMS")) return false;
    if (el.tagName === "SELECT") {
      const options = Array.from(el.options);
      // With no option marked selected, a single select starts on its first option.
      if (!el.multiple && !options.some((o) => o.defaultSelected)) return el.selectedIndex > 0;
      return options.some((o) => o.selected !== o.defaultSelected);
    }
    if (el.type === "checkbox" || el.type === "radio") return el.checked !== el.defaultChecked;
    if (nonEmpty) return el.value.trim() !== "";
    return el.value !== el.defaultValue;
  }
  function dirty(form) {
    const nonEmpty = form.hasAttribute("data-guard-nonempty");
    return Array.from(form.elements).some((el) => changed(el, nonEmpty));
  }
  document.addEventListener("submit", (event) => { sending = event.target; }, true);
  window.addEventListener("beforeunload", (event) => {
    const unsent = guardedForms().filter((form) => form !== sending && dirty(form));
    sending = null;
    if (unsent.length) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  // ---- 2. Live: poll for what others changed ----
  const center = document.getElementById("command-center");
  if (!center) return;
  const period = Math.max(2, Number(center.dataset.poll) || 5) * 1000;
  const loadedInput = document.getElementById("id_loaded_version");
  const loadedVersion = Number(loadedInput ? loadedInput.value : center.dataset.version);
  let since = center.dataset.since;
  let version = Number(center.dataset.version);

  function showBanner(text, withReload) {
    const banner = document.getElementById("live-banner");
    banner.textContent = text;
    if (withReload) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "cc-btn";
      button.textContent = "Reload";
      button.addEventListener("click", () => window.location.reload());
      banner.appendChild(button);
    }
    banner.hidden = false;
  }

  // The other apps' panels (impact, communications, review) load after the page is shown.
  function loadPanels() {
    const holder = document.getElementById("follow-up-panels");
    if (!holder) return;
    fetch(holder.dataset.url, { credentials: "same-origin" })
      .then((response) => (response.ok ? response.text() : Promise.reject(response.status)))
      .then((html) => { holder.innerHTML = html; })
      .catch(() => { holder.innerHTML = '<section class="panel"><p class="help">Could not load these panels; reload to try again.</p></section>'; });
  }
  loadPanels();

  function apply(data) {
    document.getElementById("incident-header").innerHTML = data.header;
    const actions = document.getElementById("incident-actions");
    if (actions) actions.innerHTML = data.actions;
    const list = document.getElementById("timeline-list");
    if (list && center.hasAttribute("data-live-timeline")) {
      const empty = list.querySelector(".tl-empty");
      if (empty && data.events.length) empty.remove();
      // Newest first: insert the oldest new row first so the newest ends on top.
      data.events.slice().reverse().forEach((html) => {
        const holder = document.createElement("ol");
        holder.innerHTML = html.trim();
        const row = holder.firstElementChild;
        if (!row || list.querySelector(`[data-event-id="${row.dataset.eventId}"]`)) return;
        row.classList.add("tl-new");
        list.insertBefore(row, list.firstElementChild);
      });
    }
    if (data.more) showBanner("Many new timeline entries arrived.", true);
    since = String(data.last_event_id);
    if (data.version !== version) {
      version = data.version;
      loadPanels();
      if (version !== loadedVersion) {
        const edit = document.getElementById("incident_form");
        const unsaved = edit && dirty(edit);
        showBanner(
          "Someone else changed this incident since you opened the page (shown above). " +
            (unsaved
              ? "Saving your edits to its details would now be refused: copy what you typed, then reload."
              : "Reload before editing its details; notes and actions are not affected."),
          !unsaved
        );
      }
    }
  }

  async function poll() {
    if (!document.hidden) {
      try {
        const url = new URL(center.dataset.liveUrl, window.location.href);
        url.searchParams.set("since", since);
        const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (response.ok) apply(await response.json());
      } catch (error) {
        // Offline or the server restarting: try again at the next tick.
      }
    }
    window.setTimeout(poll, period);
  }
  window.setTimeout(poll, period);
})();
