//! `imprint operators ...` and signing in on the command line: `--operator
//! ID` with the PIN from `IMPRINT_OPERATOR_PIN` or a prompt. New PINs come
//! from `IMPRINT_NEW_OPERATOR_PIN` or a prompt (asked twice), badge codes
//! from `IMPRINT_NEW_OPERATOR_BADGE` or a prompt that does not echo: never
//! from the command line, where `ps` and the shell history would keep them.

use crate::{json, load_config, out, Cli, CmdResult, Fail};
use clap::Subcommand;
use imprint_api::auth::{self, NewOperator, OperatorEdit};
use imprint_api::{Actor, ApiError, Credentials, OperatorPin, Role, StationConfig};
use std::io::IsTerminal;

#[derive(Subcommand)]
pub enum OperatorsCmd {
    /// Add an operator (admin). The first admin of a station is added without
    /// signing in. The PIN is asked for twice (or IMPRINT_NEW_OPERATOR_PIN).
    Add {
        /// The new operator's id, used to sign in: 1 to 64 letters, digits, '-', '_', '.' or '@'.
        id: String,
        /// The name shown in the title bar and in records.
        #[arg(long)]
        name: String,
        /// What the operator may do (docs/roles.md).
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Also give the operator a badge: scan it at the prompt (or IMPRINT_NEW_OPERATOR_BADGE).
        #[arg(long)]
        badge: bool,
    },
    /// List operators (admin).
    List {
        /// Print the operators as a JSON array (role, enabled, has_badge, locked_until; never a PIN or badge).
        #[arg(long)]
        json: bool,
    },
    /// Disable an operator: they can no longer sign in (admin).
    Disable {
        /// The operator's id.
        id: String,
    },
    /// Enable an operator again (admin).
    Enable {
        /// The operator's id.
        id: String,
    },
    /// Change an operator's role (admin).
    SetRole {
        /// The operator's id.
        id: String,
        /// The new role.
        #[arg(value_enum)]
        role: RoleArg,
    },
    /// Set a new PIN (also clears a lockout) (admin).
    ResetPin {
        /// The operator's id.
        id: String,
    },
    /// Give an operator a badge (scanned at the prompt), or take it away with --clear (admin).
    SetBadge {
        /// The operator's id.
        id: String,
        /// Take the operator's badge away instead of scanning a new one.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Technician,
    Qa,
    Supervisor,
    Admin,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Technician => Role::Technician,
            RoleArg::Qa => Role::Qa,
            RoleArg::Supervisor => Role::Supervisor,
            RoleArg::Admin => Role::Admin,
        }
    }
}

fn secret(env: &str, prompt: &str) -> Result<String, Fail> {
    if let Ok(v) = std::env::var(env) {
        return Ok(v);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Fail::Api(ApiError::bad_request(format!("{prompt}: no terminal to ask on; set {env}"))));
    }
    rpassword::prompt_password(format!("{prompt}: ")).map_err(|e| Fail::Api(ApiError::io("reading from the terminal", e)))
}

pub fn new_pin(id: &str) -> Result<OperatorPin, Fail> {
    if let Ok(v) = std::env::var("IMPRINT_NEW_OPERATOR_PIN") {
        return Ok(OperatorPin::new(v));
    }
    let a = secret("IMPRINT_NEW_OPERATOR_PIN", &format!("New PIN for {id}"))?;
    let b = secret("IMPRINT_NEW_OPERATOR_PIN", "The same PIN again")?;
    if a != b {
        return Err(Fail::Api(ApiError::bad_request("the two PINs differ: nothing was changed")));
    }
    Ok(OperatorPin::new(a))
}

pub fn badge() -> Result<String, Fail> {
    secret("IMPRINT_NEW_OPERATOR_BADGE", "Scan the badge")
}

/// A new operator from the command line (PIN and badge from env or prompt).
pub fn new_operator(id: &str, name: &str, role: RoleArg, with_badge: bool) -> Result<NewOperator, Fail> {
    Ok(NewOperator {
        id: id.to_string(),
        display_name: name.to_string(),
        role: role.into(),
        pin: new_pin(id)?,
        badge: if with_badge { Some(badge()?) } else { None },
    })
}

/// `--operator ID` as credentials (the PIN from IMPRINT_OPERATOR_PIN or the terminal).
pub fn credentials(cli: &Cli) -> Result<Option<Credentials>, Fail> {
    let Some(id) = cli.operator.as_deref() else { return Ok(None) };
    let pin = secret("IMPRINT_OPERATOR_PIN", &format!("PIN for {id}"))?;
    Ok(Some(Credentials::Pin { id: id.to_string(), pin: OperatorPin::new(pin) }))
}

/// Who runs this command (`headless`: the station, watch and provision
/// commands, which may run as the configured service operator).
pub fn actor(cli: &Cli, cfg: &StationConfig, headless: bool) -> Result<Actor, Fail> {
    let creds = credentials(cli)?;
    match auth::command_actor(cfg, creds.as_ref(), headless) {
        Ok(a) => Ok(a),
        // First start on a terminal: ask for the first admin here.
        Err(e) if e.code == imprint_api::ErrorCode::Unauthenticated && creds.is_none() && std::io::stdin().is_terminal() => {
            if !imprint_api::with_local_store(cfg, auth::needs_first_admin)? {
                return Err(e.into());
            }
            eprintln!("This station has no operator yet. Create the first admin.");
            let mut line = String::new();
            eprint!("Admin id: ");
            std::io::stdin().read_line(&mut line).map_err(|e| ApiError::io("reading from the terminal", e))?;
            let id = line.trim().to_string();
            line.clear();
            eprint!("Display name: ");
            std::io::stdin().read_line(&mut line).map_err(|e| ApiError::io("reading from the terminal", e))?;
            let new =
                NewOperator { id: id.clone(), display_name: line.trim().to_string(), role: Role::Admin, pin: new_pin(&id)?, badge: None };
            let a = auth::command_first_admin(cfg, &new)?;
            eprintln!("first admin {} created and signed in", a.id());
            Ok(a)
        }
        Err(e) => Err(e.into()),
    }
}

pub fn operators_cmd(cli: &Cli, c: &OperatorsCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    // The first admin is added without signing in, only on a station with no operator.
    if let OperatorsCmd::Add { id, name, role, badge: with_badge } = c {
        if imprint_api::with_local_store(&cfg, auth::needs_first_admin)? {
            let new = new_operator(id, name, *role, *with_badge)?;
            let a = auth::command_first_admin(&cfg, &new)?;
            eprintln!("added {} as this station's first admin", a.id());
            return Ok(0);
        }
    }
    let me = actor(cli, &cfg, false)?;
    let edit = |id: &str, e: OperatorEdit| -> CmdResult {
        let v = auth::command_operators(&cfg, |s| auth::edit(&me, s, id, &e))?;
        eprintln!("{} ({}): {}", v.id, v.role, e.word());
        Ok(0)
    };
    match c {
        OperatorsCmd::Add { id, name, role, badge: with_badge } => {
            let new = new_operator(id, name, *role, *with_badge)?;
            let v = auth::command_operators(&cfg, |s| auth::add(&me, s, &new))?;
            eprintln!("added {} ({})", v.id, v.role);
            Ok(0)
        }
        OperatorsCmd::List { json: as_json } => {
            let list = auth::command_operators(&cfg, |s| auth::list(&me, s))?;
            if *as_json {
                json(&list)?;
            } else {
                for o in &list {
                    let state = match (o.enabled, &o.locked_until) {
                        (false, _) => "disabled".to_string(),
                        (true, Some(u)) => format!("locked until {u}"),
                        (true, None) => "enabled".to_string(),
                    };
                    out(format!(
                        "{:<16} {:<10} {:<22} {}{}",
                        o.id,
                        o.role,
                        state,
                        o.display_name,
                        if o.has_badge { " [badge]" } else { "" }
                    ))?;
                }
            }
            Ok(0)
        }
        OperatorsCmd::Disable { id } => edit(id, OperatorEdit::Disable),
        OperatorsCmd::Enable { id } => edit(id, OperatorEdit::Enable),
        OperatorsCmd::SetRole { id, role } => edit(id, OperatorEdit::SetRole { role: (*role).into() }),
        OperatorsCmd::ResetPin { id } => edit(id, OperatorEdit::ResetPin { pin: new_pin(id)? }),
        OperatorsCmd::SetBadge { id, clear } => edit(id, OperatorEdit::SetBadge { badge: if *clear { None } else { Some(badge()?) } }),
    }
}
