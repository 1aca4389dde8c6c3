//! SendBulk's templates: one message per recipient, rendered with MiniJinja from the batch's
//! template. Subject and text body are plain text; the HTML body escapes every value.
//!
//! The same code renders at acceptance (to refuse a missing variable, naming the recipient's
//! index and the variable, before anything is stored) and at sending (from the stored template
//! and the recipient's variables), so what was checked is what is sent.

use std::collections::{BTreeMap, BTreeSet};

use minijinja::{Environment, UndefinedBehavior};

use crate::{domain::ValidationError, proto};

/// The most recipients one SendBulk may have.
pub const MAX_BULK_RECIPIENTS: usize = 10_000;

/// Variables every recipient has without naming them.
const BUILT_IN: [&str; 2] = ["email", "display_name"];

/// A batch's template, compiled once.
pub struct BulkTemplate {
    template: proto::SendMailRequest,
    env: Environment<'static>,
    /// The variables each part uses, by part name.
    used: BTreeMap<&'static str, BTreeSet<String>>,
}

/// The parts of a message that may use variables, with the names their templates go by (the
/// extension chooses escaping: HTML for `.html`).
const PARTS: [(&str, &str); 3] = [
    ("subject", "subject.txt"),
    ("text_body", "text_body.txt"),
    ("html_body", "html_body.html"),
];

impl BulkTemplate {
    /// Checks the template (no recipients of its own, no idempotency key) and compiles its
    /// parts.
    pub fn compile(template: proto::SendMailRequest) -> Result<Self, ValidationError> {
        for (field, list) in [
            ("template.to", &template.to),
            ("template.cc", &template.cc),
            ("template.bcc", &template.bcc),
        ] {
            if !list.is_empty() {
                return Err(ValidationError::new(
                    field,
                    "must be empty: each recipient of recipients gets a message of its own",
                ));
            }
        }
        if !template.idempotency_key.is_empty() {
            return Err(ValidationError::new(
                "template.idempotency_key",
                "must be empty: use SendBulkRequest.idempotency_key for the batch",
            ));
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        let mut used = BTreeMap::new();
        for (field, name) in PARTS {
            let source = match field {
                "subject" => template.subject.clone(),
                "text_body" => template.text_body.clone(),
                _ => template.html_body.clone(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| ValidationError::new(format!("template.{field}"), e.to_string()))?;
            let variables = env
                .get_template(name)
                .map_err(|e| ValidationError::new(format!("template.{field}"), e.to_string()))?
                .undeclared_variables(false)
                .into_iter()
                .collect();
            used.insert(field, variables);
        }
        Ok(Self {
            template,
            env,
            used,
        })
    }

    /// The message for recipient `index`: the template with this recipient as its only To and
    /// its variables filled in.
    pub fn render(
        &self,
        index: usize,
        recipient: &proto::BulkRecipient,
    ) -> Result<proto::SendMailRequest, ValidationError> {
        let field = |what: &str| format!("recipients[{index}].{what}");
        let to = recipient
            .to
            .clone()
            .ok_or_else(|| ValidationError::new(field("to"), "is required"))?;
        for (part, variables) in &self.used {
            if let Some(missing) = variables.iter().find(|name| {
                !recipient.variables.contains_key(*name) && !BUILT_IN.contains(&name.as_str())
            }) {
                return Err(ValidationError::new(
                    field("variables"),
                    format!("no variable \"{missing}\", which the template's {part} uses"),
                ));
            }
        }
        let mut context: BTreeMap<&str, &str> = recipient
            .variables
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        context.insert("email", &to.address);
        context.insert("display_name", &to.name);
        let mut rendered = [String::new(), String::new(), String::new()];
        for (slot, (part, name)) in rendered.iter_mut().zip(PARTS) {
            *slot = self
                .env
                .get_template(name)
                .and_then(|t| t.render(&context))
                .map_err(|e| {
                    ValidationError::new(field("variables"), format!("rendering {part}: {e}"))
                })?;
        }
        let [subject, text_body, html_body] = rendered;
        Ok(proto::SendMailRequest {
            to: vec![to],
            subject,
            text_body,
            html_body,
            ..self.template.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> proto::SendMailRequest {
        proto::SendMailRequest {
            mailbox: "news@contoso.com".into(),
            subject: "Hello {{ name }}".into(),
            text_body: "Dear {{ name }}, your code is {{ code }}.".into(),
            html_body: "<p>Dear {{ name }}</p>".into(),
            ..Default::default()
        }
    }

    fn recipient(address: &str, variables: &[(&str, &str)]) -> proto::BulkRecipient {
        proto::BulkRecipient {
            to: Some(proto::EmailAddress {
                address: address.into(),
                name: String::new(),
            }),
            variables: variables
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn values_are_plain_in_text_and_escaped_in_html() {
        let bulk = BulkTemplate::compile(template()).unwrap();
        let message = bulk
            .render(
                0,
                &recipient("a@example.com", &[("name", "<Ann & Bo>"), ("code", "7")]),
            )
            .unwrap();
        assert_eq!(message.subject, "Hello <Ann & Bo>");
        assert_eq!(message.text_body, "Dear <Ann & Bo>, your code is 7.");
        assert_eq!(message.html_body, "<p>Dear &lt;Ann &amp; Bo&gt;</p>");
        assert_eq!(message.to.len(), 1);
    }

    #[test]
    fn a_missing_variable_names_the_recipient_and_the_variable() {
        let bulk = BulkTemplate::compile(template()).unwrap();
        let error = bulk
            .render(12, &recipient("a@example.com", &[("name", "Ann")]))
            .unwrap_err();
        assert_eq!(error.field, "recipients[12].variables");
        assert!(error.to_string().contains("\"code\""), "{error}");
    }

    #[test]
    fn a_template_with_recipients_or_a_syntax_error_is_refused() {
        let mut with_to = template();
        with_to.to.push(proto::EmailAddress {
            address: "x@example.com".into(),
            name: String::new(),
        });
        assert_eq!(
            BulkTemplate::compile(with_to).err().unwrap().field,
            "template.to"
        );
        let mut broken = template();
        broken.subject = "Hi {{ name".into();
        assert_eq!(
            BulkTemplate::compile(broken).err().unwrap().field,
            "template.subject"
        );
    }
}
