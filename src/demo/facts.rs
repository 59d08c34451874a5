//! The facts the demo's questions ask about: common knowledge a 135 M-parameter model mostly
//! has, each with the answers the gold judge accepts and the full sentence a demonstration uses.

/// One fact: a question, the answers that count as correct (the first is the one a
/// demonstration gives), and a one-sentence answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fact {
    pub question: &'static str,
    pub answers: &'static [&'static str],
    pub sentence: &'static str,
    /// The answer is a number, so "Answer with just the number." may be asked.
    pub numeric: bool,
}

const fn fact(
    question: &'static str,
    answers: &'static [&'static str],
    sentence: &'static str,
) -> Fact {
    Fact { question, answers, sentence, numeric: false }
}

const fn number(
    question: &'static str,
    answers: &'static [&'static str],
    sentence: &'static str,
) -> Fact {
    Fact { question, answers, sentence, numeric: true }
}

pub static FACTS: &[Fact] = &[
    fact("What is the capital of France?", &["Paris"], "The capital of France is Paris."),
    fact("What is the capital of Japan?", &["Tokyo"], "The capital of Japan is Tokyo."),
    fact("What is the capital of Italy?", &["Rome"], "The capital of Italy is Rome."),
    fact("What is the capital of Germany?", &["Berlin"], "The capital of Germany is Berlin."),
    fact("What is the capital of Spain?", &["Madrid"], "The capital of Spain is Madrid."),
    fact("What is the capital of Egypt?", &["Cairo"], "The capital of Egypt is Cairo."),
    fact("What is the capital of Russia?", &["Moscow"], "The capital of Russia is Moscow."),
    fact("What is the capital of China?", &["Beijing"], "The capital of China is Beijing."),
    fact("What is the capital of England?", &["London"], "The capital of England is London."),
    fact("What is the capital of Greece?", &["Athens"], "The capital of Greece is Athens."),
    fact("What is the capital of Portugal?", &["Lisbon"], "The capital of Portugal is Lisbon."),
    fact("What is the capital of Ireland?", &["Dublin"], "The capital of Ireland is Dublin."),
    fact("What is the capital of Norway?", &["Oslo"], "The capital of Norway is Oslo."),
    fact("What is the capital of Sweden?", &["Stockholm"], "The capital of Sweden is Stockholm."),
    fact("What is the capital of Poland?", &["Warsaw"], "The capital of Poland is Warsaw."),
    fact("What is the capital of Austria?", &["Vienna"], "The capital of Austria is Vienna."),
    fact("What is the capital of Kenya?", &["Nairobi"], "The capital of Kenya is Nairobi."),
    fact("What is the capital of Peru?", &["Lima"], "The capital of Peru is Lima."),
    fact("What is the capital of Cuba?", &["Havana"], "The capital of Cuba is Havana."),
    fact("What is the capital of Canada?", &["Ottawa"], "The capital of Canada is Ottawa."),
    fact(
        "What is the capital of Australia?",
        &["Canberra"],
        "The capital of Australia is Canberra.",
    ),
    fact("What is the capital of Thailand?", &["Bangkok"], "The capital of Thailand is Bangkok."),
    fact("What is the capital of Turkey?", &["Ankara"], "The capital of Turkey is Ankara."),
    fact("What is the capital of Finland?", &["Helsinki"], "The capital of Finland is Helsinki."),
    fact(
        "What is the capital of Denmark?",
        &["Copenhagen"],
        "The capital of Denmark is Copenhagen.",
    ),
    fact("What is the capital of Hungary?", &["Budapest"], "The capital of Hungary is Budapest."),
    fact("What is the capital of Belgium?", &["Brussels"], "The capital of Belgium is Brussels."),
    fact("What is the capital of Vietnam?", &["Hanoi"], "The capital of Vietnam is Hanoi."),
    fact("What is the capital of Iran?", &["Tehran"], "The capital of Iran is Tehran."),
    fact("What is the capital of Chile?", &["Santiago"], "The capital of Chile is Santiago."),
    fact("What color is a banana?", &["yellow"], "A banana is yellow."),
    fact("What color is grass?", &["green"], "Grass is green."),
    fact("What color is the sky on a clear day?", &["blue"], "The sky on a clear day is blue."),
    fact("What color is snow?", &["white"], "Snow is white."),
    fact("What color is coal?", &["black"], "Coal is black."),
    fact("What color is a ripe strawberry?", &["red"], "A ripe strawberry is red."),
    fact("What color is a lemon?", &["yellow"], "A lemon is yellow."),
    fact("What color is a carrot?", &["orange"], "A carrot is orange."),
    fact("What color is milk?", &["white"], "Milk is white."),
    fact("What color is a ripe tomato?", &["red"], "A ripe tomato is red."),
    fact("What color is a lime?", &["green"], "A lime is green."),
    fact("What color is chocolate?", &["brown"], "Chocolate is brown."),
    fact("What color is a crow?", &["black"], "A crow is black."),
    fact("What color is a pumpkin?", &["orange"], "A pumpkin is orange."),
    fact("What color is an emerald?", &["green"], "An emerald is green."),
    fact("What is the opposite of hot?", &["cold"], "The opposite of hot is cold."),
    fact("What is the opposite of big?", &["small", "little"], "The opposite of big is small."),
    fact("What is the opposite of up?", &["down"], "The opposite of up is down."),
    fact("What is the opposite of day?", &["night"], "The opposite of day is night."),
    fact("What is the opposite of fast?", &["slow"], "The opposite of fast is slow."),
    fact("What is the opposite of happy?", &["sad", "unhappy"], "The opposite of happy is sad."),
    fact("What is the opposite of light?", &["dark", "heavy"], "The opposite of light is dark."),
    fact("What is the opposite of wet?", &["dry"], "The opposite of wet is dry."),
    fact("What is the opposite of open?", &["closed", "shut"], "The opposite of open is closed."),
    fact("What is the opposite of full?", &["empty"], "The opposite of full is empty."),
    fact("What is the opposite of early?", &["late"], "The opposite of early is late."),
    fact("What is the opposite of rich?", &["poor"], "The opposite of rich is poor."),
    fact("What is the opposite of tall?", &["short"], "The opposite of tall is short."),
    fact("What is the opposite of loud?", &["quiet", "soft"], "The opposite of loud is quiet."),
    fact("What is the opposite of strong?", &["weak"], "The opposite of strong is weak."),
    fact("What is the opposite of clean?", &["dirty"], "The opposite of clean is dirty."),
    fact("What is the opposite of young?", &["old"], "The opposite of young is old."),
    fact("What is the opposite of true?", &["false"], "The opposite of true is false."),
    fact("What is the opposite of north?", &["south"], "The opposite of north is south."),
    fact("What is the opposite of win?", &["lose"], "The opposite of win is lose."),
    number("How many legs does a spider have?", &["8", "eight"], "A spider has 8 legs."),
    number("How many legs does a dog have?", &["4", "four"], "A dog has 4 legs."),
    number("How many legs does a bird have?", &["2", "two"], "A bird has 2 legs."),
    number("How many legs does an insect have?", &["6", "six"], "An insect has 6 legs."),
    number("How many legs does a horse have?", &["4", "four"], "A horse has 4 legs."),
    number("How many days are in a week?", &["7", "seven"], "There are 7 days in a week."),
    number("How many months are in a year?", &["12", "twelve"], "There are 12 months in a year."),
    number("How many hours are in a day?", &["24", "twenty-four"], "There are 24 hours in a day."),
    number(
        "How many minutes are in an hour?",
        &["60", "sixty"],
        "There are 60 minutes in an hour.",
    ),
    number(
        "How many seconds are in a minute?",
        &["60", "sixty"],
        "There are 60 seconds in a minute.",
    ),
    number("How many sides does a triangle have?", &["3", "three"], "A triangle has 3 sides."),
    number("How many sides does a square have?", &["4", "four"], "A square has 4 sides."),
    number("How many sides does a hexagon have?", &["6", "six"], "A hexagon has 6 sides."),
    number("How many sides does an octagon have?", &["8", "eight"], "An octagon has 8 sides."),
    number("How many sides does a pentagon have?", &["5", "five"], "A pentagon has 5 sides."),
    number("How many continents are there?", &["7", "seven"], "There are 7 continents."),
    number("How many wheels does a bicycle have?", &["2", "two"], "A bicycle has 2 wheels."),
    number("How many wheels does a tricycle have?", &["3", "three"], "A tricycle has 3 wheels."),
    number(
        "How many players are on a soccer team on the field?",
        &["11", "eleven"],
        "A soccer team has 11 players on the field.",
    ),
    number(
        "How many strings does a standard guitar have?",
        &["6", "six"],
        "A standard guitar has 6 strings.",
    ),
    number(
        "How many cents are in a dollar?",
        &["100", "one hundred"],
        "There are 100 cents in a dollar.",
    ),
    number(
        "How many letters are in the English alphabet?",
        &["26", "twenty-six"],
        "There are 26 letters in the English alphabet.",
    ),
    number(
        "How many colors are in a rainbow?",
        &["7", "seven"],
        "There are 7 colors in a rainbow.",
    ),
    number("How many days are in a leap year?", &["366"], "There are 366 days in a leap year."),
    number(
        "How many planets are in the solar system?",
        &["8", "eight"],
        "There are 8 planets in the solar system.",
    ),
];
