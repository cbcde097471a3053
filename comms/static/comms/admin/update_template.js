/* The update draft form: choosing a template fills the audience, public status, title and body at once.
   What a person typed is never overwritten silently: a field is filled when it is empty or still holds
   the previous template's text, and otherwise only after they confirm. */
(function () {
  "use strict";
  var data = document.getElementById("update-templates");
  var select = document.getElementById("id_template");
  if (!data || !select) return;
  var templates = JSON.parse(data.textContent);
  var fields = ["audience", "public_status", "title", "body"];
  var previous = templates[select.value] || null;

  function untouched(name, element) {
    return !element.value || (previous && element.value === previous[name]);
  }

  select.addEventListener("change", function () {
    var chosen = templates[select.value];
    if (!chosen) { previous = null; return; }
    var edited = fields.filter(function (name) {
      var element = document.getElementById("id_" + name);
      return element && !untouched(name, element) && element.value !== chosen[name];
    });
    var replace = !edited.length || window.confirm(
      "Replace what you wrote in " + edited.join(", ").replace("_", " ") + " with the template's text?");
    fields.forEach(function (name) {
      var element = document.getElementById("id_" + name);
      if (!element || (!replace && edited.indexOf(name) !== -1)) return;
      if (name === "public_status" && !chosen[name]) return;  // "any status": keep the one chosen
      element.value = chosen[name];
      element.dispatchEvent(new Event("change", { bubbles: true }));
    });
    previous = chosen;
  });
})();
